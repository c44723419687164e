"""What a netback queue raises when the frontend must be cut off."""


class FatalFrontendError(Exception):
    """The frontend broke the protocol in a way that is only possible on purpose (or a bug):
    netback disconnects it, like Linux's ``xenvif_fatal_tx_err``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
