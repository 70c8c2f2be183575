"""``python -m fastvit.bench slug [--device D]`` prints the results directory name of a device
(``cpu-amd-epyc``); ``python -m fastvit.bench device`` its type (cuda if available, else cpu)."""
import argparse
import sys

import torch

from fastvit.bench.env import device_slug
from fastvit.devices import default_device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastvit.bench")
    p.add_argument("what", choices=["slug", "device"])
    p.add_argument("--device")
    args = p.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    print(device_slug(device) if args.what == "slug" else device.type)
    return 0


if __name__ == "__main__":
    sys.exit(main())
