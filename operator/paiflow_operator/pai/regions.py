"""Where PAI Flow may be called: the regions whose endpoints PAI documents, checked where the host is built."""

from __future__ import annotations

import re
from typing import Final

from .errors import BadRequestError

# Region ids go into a host name and come from user resources. The shape alone is not enough:
# "oss-cn-hangzhou" is well formed, and paiflow.oss-cn-hangzhou.aliyuncs.com is the address of an OSS bucket
# named "paiflow" that anyone may own. So the signed request (AccessKey id, STS token) only ever goes to a
# region where PAI Flow is documented to have an endpoint, or one the operator's administrator added.
PAI_REGIONS: Final = frozenset(
    {
        "cn-beijing",
        "cn-hangzhou",
        "cn-shanghai",
        "cn-shenzhen",
        "cn-hongkong",
        "ap-southeast-1",
        "us-east-1",
        "us-west-1",
        "eu-central-1",
        "ap-south-1",
        "cn-wulanchabu",
        "ap-southeast-5",
    }
)
REGION_RE = re.compile(r"[a-z]{2,}(-[a-z0-9]+){1,4}")


def check_region(region: str, allowed: frozenset[str]) -> None:
    if not isinstance(region, str) or not REGION_RE.fullmatch(region):
        raise BadRequestError(f"invalid region id {str(region)[:64]!r}", code="InvalidRegionId")
    if region not in allowed:
        raise BadRequestError(
            f"region {region!r} is not a PAI Flow region this operator may call (allowed: "
            f"{', '.join(sorted(allowed))}); an administrator can add one with PAIFLOW_EXTRA_REGIONS",
            code="RegionNotAllowed",
        )
