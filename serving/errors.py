"""One root exception for the serving package; each carries its HTTP status and CLI exit status.

Every error the gateway answers has the same JSON body, `{"error": <code>, "message": <one line>,
...details}` (details: `field` for bad input, `model` for a missing model, `missing` while not ready,
`error_id` for a bug), so clients and tests branch on `error`, never on message text. serving.edge turns
these, the framework's own errors (404, 405, request validation) and any unexpected exception into it.
"""

from __future__ import annotations

from typing import Any

from core.errors import BadInput, BtcflowError
from core.secrets import mask_uri


class ServingError(BtcflowError):
    """Every error the gateway answers on purpose: a btcflow error with its HTTP status and code."""

    exit_code = 2
    status_code = 500
    code = "serving_error"

    def details(self) -> dict[str, Any]:
        """Extra fields for the JSON body."""
        return {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": mask_uri(str(self)), **self.details()}  # it may name the store


class BadField(ServingError, BadInput):
    """A request value the models cannot take; names the field (`rows[3].open` inside a batch)."""

    status_code = 422
    code = "bad_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def details(self) -> dict[str, Any]:
        return {"field": self.field}


class ModelUnavailable(ServingError):
    """No Production version of this model is loaded (none promoted yet, or none loadable)."""

    status_code = 503
    code = "model_unavailable"

    def __init__(self, model: str, reason: str = "has no Production version loaded") -> None:
        super().__init__(f"model {model} {reason}")
        self.model = model

    def details(self) -> dict[str, Any]:
        return {"model": self.model}


class NotReady(ServingError):
    """Some of the three models are not loaded yet: /ready answers this until they are."""

    status_code = 503
    code = "not_ready"

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"waiting for {', '.join(missing)}")
        self.missing = missing

    def details(self) -> dict[str, Any]:
        return {"missing": self.missing}


class UnsupportedModel(ServingError):
    """A model version whose files the numpy engine cannot evaluate; refused when it loads."""

    code = "unsupported_model"


class Unauthorized(ServingError):
    """No API key, or one unknown or revoked (serving.guard); an admin route called without its token."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ServingError):
    """An admin route called with the wrong token (a gateway without API keys only: with keys, 401)."""

    status_code = 403
    code = "forbidden"


class NotFound(ServingError):
    """No route at this path."""

    status_code = 404
    code = "not_found"


class MethodNotAllowed(ServingError):
    """A route exists at this path, but not for this method; the answer's Allow header lists those that do."""

    status_code = 405
    code = "method_not_allowed"


class BodyTooLarge(ServingError):
    """A request body over the configured limit, refused before it is read whole or parsed."""

    status_code = 413
    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body over {limit:,} bytes (BTCFLOW_MAX_BODY_BYTES); send fewer rows per request"
        )


class HTTPProblem(ServingError):
    """Any other status the framework itself answers (400 for a body it could not read, ...)."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.code = status_code, code


class InternalError(ServingError):
    """An exception nothing expected (a bug): the answer and the log line carry the same id."""

    status_code = 500
    code = "internal_error"

    def __init__(self, error_id: str) -> None:
        super().__init__(f"unexpected error {error_id}; the gateway's log has its traceback under that id")
        self.error_id = error_id

    def details(self) -> dict[str, Any]:
        return {"error_id": self.error_id}
