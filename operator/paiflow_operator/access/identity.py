"""The credentials behind each identity a policy can name: the operator's own, or a RAM role assumed from them.

One AssumeRoleSource per role, made on first use and kept while a policy names the role (forget() drops the
others), so the vendor library's cache and refresh of its STS keys serve every call of that role.
"""

from __future__ import annotations

from paiflow_operator.access.policy import Identity
from paiflow_operator.pai.credentials import AssumeRoleSource, CredentialSource, DefaultChainSource
from paiflow_operator.pai.errors import CredentialsError


class Identities:
    def __init__(
        self,
        operator: CredentialSource,
        *,
        sts_endpoint: str,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
    ) -> None:
        self.operator = operator
        self._sts_endpoint = sts_endpoint
        self._timeouts = (connect_timeout, read_timeout)
        self._roles: dict[str, AssumeRoleSource] = {}

    def credentials(self, identity: Identity) -> CredentialSource:
        """Operator or AssumeRole; a Secret's keys come from the resource's own namespace (secret_credentials)."""
        if identity.type == "AssumeRole" and identity.role_arn:
            source = self._roles.get(identity.role_arn)
            if source is None:
                if not isinstance(self.operator, DefaultChainSource):
                    raise CredentialsError("AssumeRole needs the operator's default credential chain as its source")
                source = AssumeRoleSource(
                    identity.role_arn,
                    self.operator,
                    sts_endpoint=self._sts_endpoint,
                    connect_timeout=self._timeouts[0],
                    read_timeout=self._timeouts[1],
                )
                self._roles[identity.role_arn] = source
            return source
        if identity.type == "Secret":
            raise ValueError("a Secret's credentials are read from the resource's namespace, not here")
        return self.operator

    def forget(self, keep: set[str]) -> None:
        """Drops the roles no policy names any more (their cached keys with them)."""
        for arn in list(self._roles):
            if arn not in keep:
                del self._roles[arn]
