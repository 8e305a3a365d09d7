"""Reading a patient's resources from a FHIR server (search with paging), for the CDS Hooks service and the app.

The bearer token is sent only to the server's own origin (scheme and host), never logged, never stored.
"""

from __future__ import annotations

import httpx

from .errors import ClinAgentError

MAX_PAGES = 10


class FetchError(ClinAgentError):
    """The server could not give the data (unreachable, an error status, not JSON, too many pages, foreign link)."""


def search(base: str, query: str, token: str | None = None, timeout: float = 10.0, max_pages: int = MAX_PAGES) -> dict:
    """GET `base/query`, following `next` links on the same origin; the pages' entries are merged into one Bundle."""
    headers = {"Accept": "application/fhir+json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    origin = httpx.URL(base)
    url = base.rstrip("/") + "/" + query.lstrip("/")
    collected: dict | None = None
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            for _ in range(max_pages):
                r = client.get(url, headers=headers)
                if r.status_code != 200:
                    raise FetchError(f"the FHIR server answered {r.status_code}")
                page = r.json()
                if collected is None:
                    collected = page
                elif page.get("entry"):
                    collected.setdefault("entry", []).extend(page["entry"])
                nxt = next((link.get("url") for link in page.get("link") or [] if link.get("relation") == "next"), None)
                if page.get("resourceType") != "Bundle" or not nxt:
                    return collected or {}
                target = httpx.URL(nxt)
                if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
                    raise FetchError("the next page is on another origin; the token is not sent there")
                url = nxt
    except httpx.HTTPError as e:
        raise FetchError(f"could not reach the FHIR server ({type(e).__name__})") from None
    except ValueError:
        raise FetchError("the FHIR server's answer is not JSON") from None
    raise FetchError(f"more than {max_pages} pages")
