class CheckpointConversionError(ValueError):
    """A source checkpoint does not map completely onto the mmdet backbone (the message
    lists the keys), is another format, or has another depth. Nothing is written."""
