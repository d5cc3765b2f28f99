"""What the GPU kit runs: its sections, their limits and sizes (standard library only: the command
line reads it before anything is staged)."""

SECTIONS = ('env', 'op_correctness', 'op_targets', 'backbone_correctness', 'op_speed', 'backbone_speed',
            'compile', 'compiled_speed', 'profile', 'sweep')
CORRECTNESS_SECTIONS = ('op_correctness', 'backbone_correctness', 'compile')
# Relative error limits: max |actual - truth| / max |truth|.
OP_TOL = {'float32': 1e-4, 'bfloat16': 2e-2, 'float16': 2e-2}
# Whole backbone against its float64 run: the Triton path's relative RMS error may be 2 x the
# PyTorch path's + this floor (see correctness.section_backbone_correctness).
BACKBONE_FLOOR = {'float32': 1e-4, 'bf16-autocast': 1e-3}
COMPILE_TOL = 1e-3
# (sizes) of each mode: the real run and the dry run; ``timing``: keyword arguments of
# mmmila.bench.timing.median_ms (the dry run times one call, without warm-up).
PLAN = {
    'gpu': dict(image=(800, 1280), batch=2, arch='tiny', op_speed_maps=((200, 320), (512, 512)),
                target_maps=((8, 8), (512, 512)),
                sweep=(512, 1024, 1536, 2048), op_extra=((3, (7, 11), 64, 2),), op_shapes=None, timing={}),
    # Half MILA-T's widths and heads (head dim 32 as in MILA), one block per stage; of the op shapes
    # MILA-T's and MILA-B's first stage (C = 64 and 96).
    'dry': dict(image=(32, 48), batch=2,
                arch=dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
                op_speed_maps=((6, 10), (8, 8)), target_maps=((8, 8), (16, 16)), sweep=(16,), op_extra=(),
                op_shapes=(0, 4),
                timing=dict(cpu_calls=1, cpu_warmup=False)),
}
# Time each section needs at least on the H200 (a guess made before any GPU run, to skip a section
# rather than be killed in it); the dry run ignores these.
MIN_SECONDS = {'env': 5, 'op_correctness': 30, 'op_targets': 20, 'backbone_correctness': 40, 'op_speed': 30,
               'backbone_speed': 60, 'compile': 90, 'compiled_speed': 120, 'profile': 15,
               'sweep': 60}
# Faults the kit's own tests inject into the op under test (--inject-fault).
FAULTS = ('scale', 'nan')
