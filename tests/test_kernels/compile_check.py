"""Compile the kernels for a CUDA target without a GPU, and report registers and spills.

    python tests/test_kernels/compile_check.py --arch 90 --dtypes fp32,bf16,fp16 \
        [--kernels attention,dwconv,chains]

The Triton interpreter runs the kernels' maths on CPU but does not apply the compiler's rules
(constexpr-only globals, layouts, ``tl.dot`` shapes); this script runs the real compiler down to
PTX and ptxas, with the launch parameters of ``mmmila.kernels.heuristics.launch_config`` (the defaults
of each pass, or ``--params``). It prints one JSON object:
``{"<dtype> <kernel>": {"registers": r, "spill_bytes": s, "instructions_per_token": i}}``, where ``i``
is the PTX instructions that one tile costs all its threads, per token (of one head): what the
kernels spend per 64 (bf16) or 128 (float32) bytes of each tensor they read or write. The depthwise-conv
kernels (``--kernels dwconv``) are compiled for each of the block's three uses of the op (``cpe``:
the skip; ``dwc``: SiLU; ``lepe``: residual and gate), with the launch parameters of
``mmmila.kernels.dwconv.dwconv_launch_config`` and float32 weights (as under autocast); their entries
are ``"<dtype> <kernel> <use>": {"registers": r, "spill_bytes": s}``. The matrix-product chain
kernels (``--kernels chains``) are compiled likewise for the block's three chains (``norm1``: the
LayerNorm with ``act_proj`` and ``in_proj``; ``norm2``: with ``fc1``; ``mlp``: GELU with ``fc2``) at
C = 512 and 768 (``norm1-512``, ...), with the launch parameters of
``mmmila.kernels.linear_chains.chain_launch_config``. It must run in a process where
TRITON_INTERPRET is not set (the kernels are otherwise built for the interpreter).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mmmila.kernels import BlockParams, launch_config
from mmmila.kernels import dwconv, linear_attn_bwd, linear_attn_fwd, linear_chains

# Pointers to the op's own tensors carry the input dtype; the rest (theta, S, m, partials) float32.
_IO_POINTERS = {'qk_ptr', 'v_ptr', 'out_ptr', 'g_ptr', 'dqk_ptr', 'dv_ptr'}
# name: (kernel, pass, is a reduction)
_KERNELS = {
    '_mila_attn_fwd_reduce_kernel': (linear_attn_fwd._mila_attn_fwd_reduce_kernel, 'fwd', True),
    '_mila_attn_fwd_map_kernel': (linear_attn_fwd._mila_attn_fwd_map_kernel, 'fwd', False),
    '_mila_attn_bwd_reduce_kernel': (linear_attn_bwd._mila_attn_bwd_reduce_kernel, 'bwd', True),
    '_mila_attn_bwd_map_kernel': (linear_attn_bwd._mila_attn_bwd_map_kernel, 'bwd', False),
}
_TORCH_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def _ptxas() -> str:
    found = glob.glob(os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'ptxas'))
    if not found:
        raise FileNotFoundError('this triton build has no NVIDIA backend (ptxas)')
    return found[0]


def _tile_instructions(ptx: str, in_loop: bool) -> int:
    """PTX instructions per thread for one tile: the body of the token loop (a reduction), or the
    whole kernel (a map pass, one tile per program). Every element of a tile has its own unrolled
    instructions, so this is what a thread issues per tile (branches aside)."""
    lines = ptx.splitlines()
    instruction = re.compile(r'\s+(@!?%p\d+\s+)?[a-z]')
    if not in_loop:
        return sum(1 for line in lines if instruction.match(line))
    labels, body = {}, 0
    for i, line in enumerate(lines):
        label = re.match(r'^(\$L__\w+):', line.strip())
        if label:
            labels[label.group(1)] = i
        back = re.search(r'bra(?:\.uni)?\s+(\$L__\w+);', line)
        if back and labels.get(back.group(1), i) < i:   # a branch back: the loop
            body = max(body, sum(1 for x in lines[labels[back.group(1)]:i + 1] if instruction.match(x)))
    return body


def _signature(kernel, constexprs: dict, pointer_type) -> dict:
    """Triton signature of ``kernel``: its constexprs, ``pointer_type(name)`` for a pointer (int32 for
    the counters), float32 for ``eps`` and int32 for every other scalar."""
    signature = {}
    for arg in kernel.arg_names:
        if arg in constexprs:
            signature[arg] = 'constexpr'
        elif arg == 'counter_ptr':
            signature[arg] = '*i32'
        elif arg.endswith('_ptr'):
            signature[arg] = pointer_type(arg)
        else:
            signature[arg] = 'fp32' if arg == 'eps' else 'i32'
    return signature


def _ptxas_report(compiled, arch: int) -> tuple[int, int]:
    """(registers, spill bytes) of a compiled kernel, by ptxas."""
    with tempfile.NamedTemporaryFile('w', suffix='.ptx', delete=False) as f:
        f.write(compiled.asm['ptx'])
    gpu = f'sm_{arch}a' if arch >= 90 else f'sm_{arch}'
    res = subprocess.run([_ptxas(), '-v', f'--gpu-name={gpu}', f.name, '-o', os.devnull],
                         capture_output=True, text=True, check=True)
    os.unlink(f.name)
    return (int(re.search(r'Used (\d+) registers', res.stderr).group(1)),
            int(re.search(r'(\d+) bytes spill stores', res.stderr).group(1)))


# The block's uses of the depthwise-conv op: (SILU, SKIP, HAS_RES, HAS_GATE).
_DWCONV_USES = {'cpe': (False, True, False, False), 'dwc': (True, False, False, False),
                'lepe': (False, False, True, True)}
# Pointers to tensors in the tokens' dtype; the weight, bias, partial sums and their gradients are
# float32, and so is gp where the gate or SiLU changes it (else it is the incoming gradient).
_DWCONV_IO = {'x_ptr', 'res_ptr', 'gate_ptr', 'out_ptr', 'grad_ptr', 'dres_ptr', 'dgate_ptr', 'dx_ptr'}


def dwconv_compile_report(arch: int, dtype: str) -> dict:
    """Compile the three depthwise-conv kernels for each use of the op for sm_<arch> with ``dtype``
    tokens; registers and spills of each."""
    cfg = dwconv.dwconv_launch_config(2, 128, 128, 64, _TORCH_DTYPES[dtype], 'cpu')
    blocks = {'_dwconv_fwd_kernel': cfg.block_n, '_dwconv_bwd_map_kernel': cfg.map_block_n,
              '_dwconv_bwd_input_kernel': cfg.block_n}
    report = {}
    for use, (silu, skip, has_res, has_gate) in _DWCONV_USES.items():
        flags = {'SILU': silu, 'SKIP': skip, 'HAS_RES': has_res, 'HAS_GATE': has_gate}
        for name, block_n in blocks.items():
            kernel = getattr(dwconv, name)
            constexprs = {k: v for k, v in flags.items() if k in kernel.arg_names}
            constexprs.update(BLOCK_N=block_n, BLOCK_C=cfg.block_c)
            if 'BLOCK_K' in kernel.arg_names:
                constexprs['BLOCK_K'] = 32
            gp_dtype = 'fp32' if silu or has_gate else dtype
            signature = _signature(kernel, constexprs, lambda arg: (
                f'*{gp_dtype}' if arg == 'gp_ptr' else f'*{dtype}' if arg in _DWCONV_IO else '*fp32'))
            compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                      target=GPUTarget('cuda', arch, 32),
                                      options={'num_warps': cfg.num_warps})
            registers, spills = _ptxas_report(compiled, arch)
            report[f'{dtype} {name} {use}'] = {'registers': registers, 'spill_bytes': spills}
    return report


# Pointers to tensors in the activations' dtype; weights, biases, norm parameters, statistics,
# partial sums and the parameters' gradients are float32 (as under autocast).
_CHAIN_IO = {'x_ptr', 'out0_ptr', 'out1_ptr', 'g_ptr', 'g0_ptr', 'g1_ptr', 'dx_ptr', 'h_ptr', 'dh_ptr',
             'a_ptr'}
# The chain kernels' uses in a block of MILA's widest stages, C = 512 (MILA-T and -S) and C = 768
# (MILA-B): name: (K, the layers' output features, constexpr flags)
_CHAIN_USES = {
    f'{use}-{C}': use_of
    for C in (512, 768)
    for use, use_of in (('norm1', (C, [C, C], {'PROLOGUE': 1})), ('norm2', (C, [4 * C], {'PROLOGUE': 1})),
                        ('mlp', (4 * C, [C], {'PROLOGUE': 2})))
}


def chains_compile_report(arch: int, dtype: str) -> dict:
    """Compile the matrix-product chain kernels for sm_<arch> with ``dtype`` activations and float32
    parameters, for each use in a block of the widest stages; registers and spills of each."""
    report = {}
    torch_dtype = _TORCH_DTYPES[dtype]
    for use, (K, outs, flags) in _CHAIN_USES.items():
        cfg = linear_chains.chain_launch_config(8000, K, outs, torch_dtype, torch.device('cpu'))
        common = {'DOT_PRECISION': 'ieee' if dtype == 'fp32' else 'tf32', 'UPCAST': False}
        kernels = {'_chain_fwd_kernel': (dict(flags, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                                              BLOCK_K=cfg.block_k), cfg.num_warps),
                   '_chain_dw_kernel': (dict(flags, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                                             BLOCK_M=cfg.dw_block_m), cfg.num_warps)}
        if flags['PROLOGUE'] == 1:
            kernels['_norm_dx_kernel'] = (dict(TWO=len(outs) > 1, BLOCK_M=cfg.dx_block_m,
                                               BLOCK_K=cfg.dx_block_k, BLOCK_N=16, BLOCK_P=16), cfg.dx_warps)
        else:
            kernels['_gelu_dx_kernel'] = (dict(BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, BLOCK_N=32),
                                          cfg.num_warps)
        for name, (constexprs, num_warps) in kernels.items():
            kernel = getattr(linear_chains, name)
            constexprs = {k: v for k, v in {**constexprs, **common}.items() if k in kernel.arg_names}
            signature = _signature(kernel, constexprs,
                                   lambda arg: f'*{dtype}' if arg in _CHAIN_IO else '*fp32')
            compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                      target=GPUTarget('cuda', arch, 32), options={'num_warps': num_warps})
            registers, spills = _ptxas_report(compiled, arch)
            report[f'{dtype} {name} {use}'] = {'registers': registers, 'spill_bytes': spills}
    return report


def compile_report(arch: int, dtype: str, params: BlockParams | None = None) -> dict:
    """Compile the four kernels for sm_<arch> with ``dtype`` inputs and the default launch parameters
    of each pass (or ``params`` for both); registers and spills of each."""
    precision = 'ieee' if dtype == 'fp32' else 'tf32'
    report = {}
    for name, (kernel, kind, is_reduce) in _KERNELS.items():
        cfg = launch_config(64000, 2, 32, _TORCH_DTYPES[dtype], torch.device('cpu'), kind=kind, params=params)
        constexprs = {'D': 32, 'BLOCK_N': cfg.reduce_block_n if is_reduce else cfg.block_n,
                      'DOT_PRECISION': precision}
        if 'HAS_GRAD_SM' in kernel.arg_names:
            constexprs['HAS_GRAD_SM'] = False
        for arg in kernel.arg_names:   # contiguous channels: Triton specialises an int equal to 1
            if arg.startswith('stride_') and arg.endswith('_c'):
                constexprs[arg] = 1
        signature = _signature(kernel, constexprs,
                               lambda arg: f'*{dtype}' if arg in _IO_POINTERS else '*fp32')
        options = ({'num_warps': cfg.reduce_warps, 'num_stages': cfg.num_stages} if is_reduce
                   else {'num_warps': cfg.map_warps})
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                  target=GPUTarget('cuda', arch, 32), options=options)
        registers, spills = _ptxas_report(compiled, arch)
        block_n = constexprs['BLOCK_N']
        threads = 32 * options['num_warps']
        report[f'{dtype} {name}'] = {
            'registers': registers, 'spill_bytes': spills,
            'instructions_per_token': round(_tile_instructions(compiled.asm['ptx'], is_reduce) * threads / block_n)}
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', type=int, default=80, help='compute capability, e.g. 80 or 90')
    parser.add_argument('--dtypes', default='bf16', help='comma-separated: fp32,bf16,fp16')
    parser.add_argument('--kernels', default='attention',
                        help='comma-separated: attention,dwconv,chains (default: attention)')
    parser.add_argument('--params', help='BlockParams fields as JSON, for both passes (default: the '
                        'defaults of each pass)')
    args = parser.parse_args()
    params = BlockParams(**json.loads(args.params)) if args.params else None
    if os.environ.get('TRITON_INTERPRET', '0') not in ('', '0'):
        raise SystemExit('unset TRITON_INTERPRET: the kernels must be built for the compiler')
    report = {}
    kernels = args.kernels.split(',')
    unknown = set(kernels) - {'attention', 'dwconv', 'chains'}
    if unknown:
        parser.error(f'unknown --kernels {sorted(unknown)}: choose from attention, dwconv, chains')
    for dtype in args.dtypes.split(','):
        if 'attention' in kernels:
            report.update(compile_report(args.arch, dtype, params))
        if 'dwconv' in kernels:
            report.update(dwconv_compile_report(args.arch, dtype))
        if 'chains' in kernels:
            report.update(chains_compile_report(args.arch, dtype))
    print(json.dumps(report))


if __name__ == '__main__':
    main()
