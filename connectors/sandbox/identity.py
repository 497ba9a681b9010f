"""The credentials the sandbox hands out, derived from the tenant name so that the emulators and the
connection registry agree without sharing any state. They are sandbox-only and public by design; real
credentials live in environment variables named by connections.yaml and never pass through here.
"""

from __future__ import annotations

import hashlib

QUICKBOOKS_CLIENT_ID = "ledgerlink-sandbox-client"
QUICKBOOKS_CLIENT_SECRET = "ledgerlink-sandbox-client-secret"


def quickbooks_realm_id(tenant: str) -> str:
    """A stable 16-digit realm id per tenant (QuickBooks realm ids are digit strings)."""
    digest = int(hashlib.sha256(f"realm:{tenant}".encode()).hexdigest(), 16)
    return str(9130000000000000 + digest % 10**15)


def quickbooks_initial_refresh_token(tenant: str) -> str:
    """The refresh token a freshly started QuickBooks emulator accepts for a tenant (as if just authorised)."""
    return f"sandbox-refresh-{tenant}-0"


def sequence_credentials(tenant: str) -> tuple[str, str]:
    """HTTP Basic client id and secret of a tenant's Sequence account."""
    return f"sandbox-{tenant}", f"sandbox-secret-{tenant}"


XERO_CLIENT_ID = "ledgerlink-sandbox-xero-client"
XERO_CLIENT_SECRET = "ledgerlink-sandbox-xero-client-secret"


def xero_tenant_id(tenant: str) -> str:
    """A stable UUID per tenant: the organisation's `xero-tenant-id` header value."""
    digest = hashlib.sha256(f"xero:{tenant}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-a{digest[17:20]}-{digest[20:32]}"


def xero_initial_refresh_token(tenant: str) -> str:
    """The refresh token a freshly started Xero emulator accepts for a tenant (as if just authorised)."""
    return f"sandbox-xero-refresh-{tenant}-0"


def hubspot_access_token(tenant: str) -> str:
    """A stable private-app style bearer token per tenant (`pat-<region>-<uuid>`, as HubSpot issues them)."""
    digest = hashlib.sha256(f"hubspot:{tenant}".encode()).hexdigest()
    return f"pat-na1-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def attio_access_token(tenant: str) -> str:
    """A tenant's Attio bearer token (a workspace API key: no refresh and no expiry)."""
    return f"sandbox-attio-{hashlib.sha256(f'attio:{tenant}'.encode()).hexdigest()[:32]}"


SALESFORCE_CLIENT_ID = "ledgerlink-sandbox-salesforce-consumer-key"
SALESFORCE_CLIENT_SECRET = "ledgerlink-sandbox-salesforce-consumer-secret"


def salesforce_initial_refresh_token(tenant: str) -> str:
    """The refresh token a freshly started Salesforce emulator accepts for a tenant (non-rotating by default)."""
    return f"sandbox-sf-refresh-{tenant}-0"
