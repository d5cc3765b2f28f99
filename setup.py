"""mmmila: MILA (Mamba-Inspired Linear Attention) backbones for OpenMMLab."""
import os
import platform
import sys

from setuptools import find_packages, setup


def cpu_extensions():
    """mmmila._C, the compiled CPU kernels (mmmila/ops/cpu_kernels.py): built on Linux x86-64 (GCC,
    OpenMP; where they are tested) when torch is importable here (install with --no-build-isolation,
    so that it is the environment's own torch) and MMMILA_WITH_CPU_KERNELS is not 0. A failed build
    is reported and skipped: mmmila then runs its PyTorch implementations (tools/install.sh insists
    on the library and says so)."""
    if os.environ.get('MMMILA_WITH_CPU_KERNELS', '1') == '0':
        return [], {}
    if not (sys.platform.startswith('linux') and platform.machine() in ('x86_64', 'AMD64')):
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return [], {}

    from setuptools.errors import CompileError

    class BuildOptional(BuildExtension):
        """An optional extension's failure (any compiler or ninja error) is reported, not fatal."""
        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:   # noqa: BLE001
                raise CompileError(f'{err}; mmmila will run its PyTorch implementations instead of '
                                   f'its compiled CPU kernels') from err

    # -fopenmp: torch's intra-op threads (at::parallel_for); the wheel's own libgomp serves it.
    # The hot loops pick AVX-512, AVX2 or baseline code when the library loads (target_clones).
    ext = CppExtension('mmmila._C', ['mmmila/ops/csrc/cpu_kernels.cpp', 'mmmila/ops/csrc/attention.cpp'],
                       depends=['mmmila/ops/csrc/lanes.h'], optional=True,
                       extra_compile_args=['-O3', '-g0', '-fopenmp', '-Wno-psabi'],
                       extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': BuildOptional}


def read_version():
    scope = {}
    exec(open('mmmila/version.py').read(), scope)
    return scope['__version__']


EXTENSIONS, COMMANDS = cpu_extensions()

setup(
    name='mmmila',
    version=read_version(),
    description='MILA backbones for mmdetection, mmsegmentation and mmpretrain, with Triton linear-attention kernels',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10,<3.13',
    # The top-level kernels/ folder ships as mmmila.kernels (no top-level `kernels` package).
    packages=find_packages(include=['mmmila', 'mmmila.*']) + ['mmmila.kernels'],
    package_dir={'mmmila.kernels': 'kernels'},
    # Pins live in requirements/constraints*.txt and are applied by tools/install.sh; here only
    # what the package needs, loosely, so that pip never swaps the user's torch.
    # `import mmmila` and the MILA backbone need only torch and mmengine (docs/architecture.md). mmengine
    # is not required here: OpenMMLab's `mmengine` and OneDL's `onedl-mmengine` both provide it, and pip
    # knows no "either"; `import mmmila` says which to install when neither is there. The extras pick
    # a stack: `pip install -e .[openmmlab]` or `.[onedl]`, never both in one environment.
    # torch 2.6: the ops' `torch.library.triton_op` and autocast rules, and weights-only loading by default.
    install_requires=['torch>=2.6', 'numpy'],
    extras_require={
        'openmmlab': ['mmengine>=0.10,<0.11', 'mmcv>=2.0.0,<2.2.0', 'mmdet>=3.3,<3.4',
                      'mmsegmentation>=1.2,<1.3', 'mmpretrain>=1.2,<1.3', 'pycocotools'],
        'onedl': ['onedl-mmengine>=0.10.12,<0.11', 'onedl-mmcv>=2.3', 'onedl-mmdetection>=3.5',
                  'onedl-mmsegmentation>=1.4', 'onedl-mmpretrain>=1.3', 'pycocotools'],
        'kernels': ['triton'],
        'deploy': ['onnx', 'onnxruntime', 'onnxscript'],
        'tests': ['pytest', 'scikit-image'],
    },
    ext_modules=EXTENSIONS,
    cmdclass=COMMANDS,
    zip_safe=False,
)
