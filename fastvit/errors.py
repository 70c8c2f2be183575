"""Typed errors. Each message names the problem: shape, dtype, device, backend, resolution, key."""


class FastViTError(Exception):
    """Base class of every error fastvit raises on bad input."""


class ShapeError(FastViTError, ValueError):
    """A tensor has the wrong rank or size (channels, head dim, q/k/v mismatch)."""


class ResolutionError(ShapeError):
    """An image size is not divisible by the patch size, or differs from the model's."""


class DTypeError(FastViTError, TypeError):
    """A tensor has a dtype the operation cannot take, or an operand that must be a tensor is not one."""


class DeviceError(FastViTError, ValueError):
    """Tensors sit on different devices, or on one the operation cannot use."""


class ArgumentError(FastViTError, ValueError):
    """An op's scalar argument is out of range or of the wrong kind (attention's ``scale``, ``dropout_p``)."""


class BackendError(FastViTError, ValueError):
    """A backend name is unknown, or the backend cannot run on the given inputs."""


class ConfigError(FastViTError, ValueError):
    """A model configuration value is out of range (a non-positive size, a width not divisible by the
    heads, an unknown option value)."""


class UnknownModelError(FastViTError, ValueError):
    """No preset has that name."""


class CheckpointError(FastViTError, ValueError):
    """A checkpoint's keys or shapes do not match the model."""


class ResultsError(FastViTError, ValueError):
    """A sweep results file cannot be written (another sweep holds it) or resumed (another environment)."""


class MissingExtraError(FastViTError, ImportError):
    """A package of an optional extra (e.g. ``fastvit[bench]`` for the report) is not installed."""


class DistributedError(FastViTError, RuntimeError):
    """A rank of a process group failed, or did not finish in time (fastvit.distributed)."""
