"""The vendor's error codes, HTTP statuses and messages the emulator answers with, in one place.

The codes are the public gateway's ("POP") codes as Alibaba's SDKs and tools list them. The HTTP statuses are
less certain: 404 for InvalidAccessKeyId.NotFound is in Alibaba's published common-error tables; the
signature/timestamp/nonce/token family is answered with 400 as the gateway's common-error lists show for
RPC APIs (a ROA product could use 403 for some; no PAI-specific table is public). The last two rows are
our choice: PAI Flow's own codes for a missing run and a refused share token are not published. Everything
is plain data here, so the tests and the operator can read it rather than copy it.

| situation                                   | HTTP | Code                                         |
|---------------------------------------------|------|----------------------------------------------|
| AccessKey id unknown (or "bad credentials") | 404  | InvalidAccessKeyId.NotFound                  |
| signature mismatch / body hash mismatch     | 400  | SignatureDoesNotMatch                        |
| Authorization missing/unparseable, a        | 400  | IncompleteSignature                          |
|   required header left out of SignedHeaders |      |                                              |
| algorithm other than ACS3-HMAC-SHA256       | 400  | InvalidSignatureMethod                       |
| x-acs-date unparseable                      | 400  | InvalidTimeStamp.Format                      |
| x-acs-date further than max_skew from now   | 400  | InvalidTimeStamp.Expired                     |
| x-acs-signature-nonce seen within the window| 400  | SignatureNonceUsed                           |
| security token unknown                      | 400  | InvalidSecurityToken.Malformed               |
| security token belongs to another key       | 400  | InvalidSecurityToken.MismatchWithAccessKey   |
| security token expired                      | 400  | InvalidSecurityToken.Expired                 |
| "STS." key used without a token             | 400  | MissingSecurityToken                         |
| x-acs-version not 2021-02-02                | 400  | InvalidVersion                               |
| x-acs-action missing                        | 400  | MissingParameter                             |
| unknown path/verb, x-acs-action mismatch    | 404  | InvalidAction.NotFound                       |
| bad parameter value (ManifestType, body)    | 400  | InvalidParameter                             |
| throttling (faults and the QPS limit)       | 400  | Throttling.User                              |
| server fault "unavailable"                  | 503  | ServiceUnavailable                           |
| server fault "internal"                     | 500  | InternalError                                |
| run does not exist (our choice)             | 404  | PipelineRunNotFound                          |
| run shared by token, TokenId wrong (ours)   | 403  | NoPermission                                 |
| CreatePipelineRun: pipeline unknown (ours)  | 400  | PipelineNotExist                             |
| CreatePipelineRun: workspace unknown (ours) | 400  | WorkspaceNotExist                            |
| Start/Terminate/Delete in a wrong state     | 400  | PipelineRunStatusInvalid                     |
|   (ours; PAI documents Delete's states only)|      |                                              |
| node id not in the run's tree (ours)        | 404  | PipelineRunNodeNotFound                      |

Throttling: the gateway's documented answer for per-user flow control is HTTP 400 ``Throttling.User``
("Request was denied due to user flow control."); a fault may override the status (e.g. 429) and add the
``x-acs-retry-after`` header, which makes the vendor SDK raise its ThrottlingException.
"""

from __future__ import annotations

from dataclasses import dataclass

API_VERSION = "2021-02-02"
PRODUCT = "PAIFlow"
DEFAULT_REGION = "cn-hangzhou"


@dataclass(frozen=True, slots=True)
class VendorError:
    status: int
    code: str
    message: str


INVALID_ACCESS_KEY = VendorError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
SIGNATURE_MISMATCH = VendorError(
    400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation."
)
INCOMPLETE_SIGNATURE = VendorError(
    400, "IncompleteSignature", "The request signature does not conform to Aliyun standards."
)
INVALID_SIGNATURE_METHOD = VendorError(400, "InvalidSignatureMethod", "Specified signature method is not valid.")
TIMESTAMP_FORMAT = VendorError(
    400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
)
TIMESTAMP_EXPIRED = VendorError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
NONCE_USED = VendorError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
TOKEN_MALFORMED = VendorError(400, "InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.")
TOKEN_MISMATCH = VendorError(
    400, "InvalidSecurityToken.MismatchWithAccessKey", "Specified SecurityToken mismatch with the AccessKey."
)
TOKEN_EXPIRED = VendorError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")
MISSING_TOKEN = VendorError(400, "MissingSecurityToken", "SecurityToken is mandatory for this action.")
INVALID_VERSION = VendorError(400, "InvalidVersion", "Specified parameter Version is not valid.")
MISSING_ACTION = VendorError(
    400,
    "MissingParameter",
    'The input parameter "x-acs-action" that is mandatory for processing this request is not supplied.',
)
ACTION_NOT_FOUND = VendorError(
    404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."
)
INVALID_PARAMETER = VendorError(400, "InvalidParameter", "The specified parameter is not valid.")
THROTTLED = VendorError(400, "Throttling.User", "Request was denied due to user flow control.")
UNAVAILABLE = VendorError(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
INTERNAL_ERROR = VendorError(
    500,
    "InternalError",
    "The request processing has failed due to some unknown error, exception or failure.",
)
RUN_NOT_FOUND = VendorError(404, "PipelineRunNotFound", "The specified pipeline run does not exist.")
NO_PERMISSION = VendorError(403, "NoPermission", "You are not authorized to access this pipeline run.")
PIPELINE_NOT_FOUND = VendorError(400, "PipelineNotExist", "The specified pipeline does not exist.")
WORKSPACE_NOT_FOUND = VendorError(400, "WorkspaceNotExist", "The specified workspace does not exist.")
RUN_STATUS_INVALID = VendorError(
    400, "PipelineRunStatusInvalid", "The operation is not allowed in the pipeline run's current status."
)
NODE_NOT_FOUND = VendorError(404, "PipelineRunNodeNotFound", "The specified node does not exist in the pipeline run.")
