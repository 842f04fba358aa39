"""The package's user-facing exception types."""


class MobileSamError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(MobileSamError, ValueError):
    """An image, prompt or parameter that the pipeline cannot use."""


class CheckpointError(MobileSamError):
    """A checkpoint file that is missing, damaged or of another model."""


class DownloadError(CheckpointError):
    """The official checkpoint could not be downloaded or failed verification."""


class BackendUnavailableError(MobileSamError):
    """A backend whose runtime is not installed or cannot run here."""


class ExportError(MobileSamError):
    """The ONNX export of a checkpoint failed."""


class ExportInterruptedError(ExportError):
    """The export process was stopped by a signal (the node is shutting down)."""
