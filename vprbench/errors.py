"""The one exception type that the command line turns into a one-line error and a non-zero exit."""


class VPRBenchError(Exception):
    """Bad input or a failed precondition, with a message that names the file or field at fault."""


class RandomInitWarning(UserWarning):
    """A model runs without pretrained weights; its descriptors mean little."""
