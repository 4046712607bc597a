"""Translating botocore's failures into the simulator's errors, each with what to do.

Translated once, at the adapter that meets them: :func:`translate_error` turns a failure into
:class:`~simulator.errors.RetryableSinkError` when the same request may pass later (throttling
of the API, timeouts, connection errors, 5xx), or into :class:`~simulator.errors.FatalSinkError`
with one line saying what to do (no credentials, no such stream, access denied, an invalid
request). ``tests/test_kinesis_errors.py`` keeps the mapping complete.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from simulator.errors import FatalSinkError, RetryableSinkError, SinkError

__all__ = ["BotoCoreError", "ClientError", "translate_error"]

#: A server's error message is cut to this length (it may quote a whole rejected key).
MAX_MESSAGE_CHARS = 200

#: Error codes of a whole request that may pass if sent again later.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "KMSThrottlingException",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: Error codes that mean the credentials themselves were refused.
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_PROFILE or run `aws configure` "
    "(a local endpoint takes any, e.g. AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test)"
)


def translate_error(exc: Exception, *, stream: str, endpoint: str | None = None) -> SinkError:
    """The simulator's error for a botocore failure of a call about ``stream``.

    Args:
        exc: What boto3 raised.
        stream: The stream the call was about.
        endpoint: The endpoint called, named in connection errors.
    """
    where = endpoint or "the Kinesis endpoint"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return FatalSinkError(NO_CREDENTIALS)
    if isinstance(exc, ProfileNotFound):
        return FatalSinkError(f"{exc}: check --profile or AWS_PROFILE against ~/.aws/config")
    if isinstance(exc, NoRegionError):
        return FatalSinkError("no AWS region: pass --region or set AWS_REGION")
    if isinstance(exc, CredentialRetrievalError):
        return FatalSinkError(f"{exc}: refresh the credentials (e.g. `aws sso login`)")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        # A request that never left (no connection) wrote nothing; one that lost its answer
        # (read timeout, connection closed mid-request) may have been written.
        return RetryableSinkError(
            f"cannot reach Kinesis at {where} ({type(exc).__name__}): check --endpoint-url "
            "(or AWS_ENDPOINT_URL), --region and the network",
            outcome_unknown=not isinstance(exc, EndpointConnectionError | ConnectTimeoutError),
        )
    if not isinstance(exc, ClientError):
        return FatalSinkError(f"Kinesis call about stream {stream!r} failed: {exc}")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = " ".join(str(error.get("Message", "")).split()) or "no message"
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    operation = exc.operation_name
    if code in RETRYABLE_CODES or status >= 500:
        return RetryableSinkError(f"{operation} on stream {stream!r} failed: {code}: {message}")
    if code == "ResourceNotFoundException" and operation == "PutRecords":
        # The stream was there when the run began: something deleted it.
        return FatalSinkError(
            f"stream {stream!r} no longer exists at {where}: it was deleted during the run"
        )
    if code == "ResourceNotFoundException":
        return FatalSinkError(
            f"stream {stream!r} not found at {where}: create it (or pass --create-stream), "
            "or check --region and --endpoint-url"
        )
    if code in ("AccessDeniedException", "AccessDenied"):
        return FatalSinkError(
            f"access denied to stream {stream!r} ({operation}): grant the credentials "
            "kinesis:PutRecords, kinesis:DescribeStreamSummary, kinesis:ListShards "
            "(and kinesis:CreateStream for --create-stream, GetRecords for verify)"
        )
    if code in CREDENTIAL_CODES:
        return FatalSinkError(
            f"AWS refused the credentials ({code}): refresh them (`aws sso login`, "
            "`aws configure`) or pick another with --profile"
        )
    if code in ("ValidationException", "InvalidArgumentException", "SerializationException"):
        hint = (
            " (if a size limit is the cause, lower --max-record-bytes or --max-request-bytes)"
            if operation == "PutRecords"
            else ""
        )
        return FatalSinkError(f"Kinesis rejected {operation} as invalid: {message}{hint}")
    if code.startswith("KMS"):
        return FatalSinkError(
            f"the KMS key of stream {stream!r} cannot be used ({code}): {message}"
        )
    return FatalSinkError(f"{operation} on stream {stream!r} failed: {code}: {message}")
