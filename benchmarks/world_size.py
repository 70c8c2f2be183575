"""The sweep by world size, for torchrun (fastvit/distributed/bench.py has the measurement):

    torchrun --nproc-per-node=2 benchmarks/world_size.py --results world.jsonl --resolutions 224,448

``python -m fastvit.distributed sweep --world-sizes 1,2,4 ...`` runs it once per world size, and
``make bench WORLD_SIZES=1,2,4`` after the resolution sweep. Not a pytest file: each rank is a process
of its own, started by torchrun."""
import sys

from fastvit.distributed.bench import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
