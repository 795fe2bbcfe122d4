"""Every deliberate difference between a reference's request and the exporter's, with why.

A reference is an official client (pinned in node/package-lock.json and pyproject.toml) or,
where no client has the mode the exporter uses, the provider's document. A difference that is
not listed here fails the suite, and so does an entry that no difference needs any more.
docs/providers.md shows the same entries in its table.
"""

from __future__ import annotations

from tests.conformance.harness import Allowed

CRISP_NODE = "crisp-api 11.3.0 (npm)"
CRISP_PYTHON = "crisp-api 1.1.23 (PyPI)"
QUICKBLOX_JS = "quickblox 2.23.0 (npm)"
QUICKBLOX_DOCS = "QuickBlox document (Get Unread Messages Count)"
SENDBIRD_JS = "sendbird-platform-sdk 1.0.3 (npm)"
INTERCOM_NODE = "intercom-client 7.0.3 (npm)"
INTERCOM_PYTHON = "python-intercom 5.0.1 (PyPI)"
STREAM_NODE = "stream-chat 9.53.0 (npm)"
STREAM_PYTHON = "stream-chat 4.33.0 (PyPI)"
STREAM_CASES = frozenset({"one-user", "several-users"})
ZENDESK_NODE = "node-zendesk 6.0.1 (npm)"
ZENDESK_PYTHON = "zenpy 2.0.57 (PyPI)"
ZENDESK_CASES = frozenset({"views", "search", "count", "groups"})
INTERCOM_CASES = frozenset({"whole-backlog", "team-backlog", "teammate-backlog", "next-page"})

ALLOW_LIST: tuple[Allowed, ...] = (
    Allowed(
        CRISP_PYTHON,
        "header:content-type",
        frozenset({"conversation", "list-page-1"}),
        "the Python client sends Content-Type: application/json on every request, GETs "
        "without a body included; a GET has no body for it to describe",
        "crisp_api/__init__.py REQUEST_HEADERS",
    ),
    Allowed(
        CRISP_PYTHON,
        "path",
        frozenset({"list-page-1"}),
        "the Python client writes /conversations/{page}/?... (a slash before the query); the "
        "Node client and Crisp's reference write /conversations/{page}, as the exporter does",
        "crisp_api/resources/website.py search_conversations; node "
        "dist/resources/WebsiteConversation.js listConversations",
    ),
    Allowed(
        CRISP_PYTHON,
        "query:per_page",
        frozenset({"list-page-1"}),
        "the Python client's search_conversations has no per_page argument (Crisp's default "
        "is 20); the exporter asks for the documented maximum, 50, as the Node client can",
        "crisp_api/resources/website.py SEARCH_CONVERSATIONS_QUERY_PARAMETERS",
    ),
    Allowed(
        QUICKBLOX_JS,
        "header:qb-os",
        frozenset(
            {
                "session-app",
                "session-user",
                "unread-token-ids",
                "unread-token-total",
                "dialogs-token",
            }
        ),
        "the SDK names the caller's operating system on every request; the API does not ask "
        "for it (none of the document's requests carries it)",
        "quickblox src/qbProxy.js ajax (QB-OS: Utils.getOS())",
    ),
    Allowed(
        QUICKBLOX_JS,
        "header:qb-sdk",
        frozenset(
            {
                "session-app",
                "session-user",
                "unread-token-ids",
                "unread-token-total",
                "dialogs-token",
            }
        ),
        "the SDK names itself and its version on every request; the API does not ask for it "
        "(none of the document's requests carries it)",
        "quickblox src/qbProxy.js ajax (QB-SDK: 'JS ' + config.version + ' - Client')",
    ),
    Allowed(
        QUICKBLOX_JS,
        "header:content-type",
        frozenset({"session-app", "session-user"}),
        "the SDK adds '; charset=UTF-8' to the form type; a percent-encoded form is ASCII, so "
        "the charset changes nothing",
        "quickblox src/qbProxy.js ajax",
    ),
    Allowed(
        QUICKBLOX_JS,
        "header:content-type",
        frozenset({"unread-token-ids", "unread-token-total", "dialogs-token"}),
        "the SDK sends a form Content-Type on every request, GETs without a body included; a "
        "GET has no body for it to describe",
        "quickblox src/qbProxy.js ajax",
    ),
    Allowed(
        SENDBIRD_JS,
        "header:accept",
        frozenset(
            f"unread-{scope}{types}"
            for scope in ("all", "super_group", "non_super_group")
            for types in ("", "-types")
        )
        | {"channels-all", "channels-non_super_group-types"},
        "the generated SDK sends its spec's 'produces' list; the Platform API answers JSON "
        "only (every documented response is JSON) and the exporter refuses a body that is not "
        "JSON as bad_response, so asking for any type changes nothing",
        "sendbird-platform-sdk dist/api/UserApi.js viewNumberOfUnreadItemsWithHttpInfo "
        "(accepts = ['application/json'])",
    ),
    Allowed(
        SENDBIRD_JS,
        "query:custom_type",
        frozenset({"unread-all-types", "unread-super_group-types", "unread-non_super_group-types"}),
        "the v1 Platform SDK sends the singular custom_type, from a generated 2021-22 spec; the "
        "API reference for unread_item_count, Sendbird's own Chat SDK (@sendbird/chat, "
        "GetUnreadItemCountRequestCommand) and the sibling unread endpoints all use the plural "
        "custom_types, which the exporter sends (exporter/providers/sendbird.py says why)",
        "sendbird-platform-sdk dist/api/UserApi.js (query 'custom_type'); "
        "sendbird.com/docs/chat/v3/platform-api/user/managing-unread-count/"
        "get-number-of-unread-items",
    ),
    Allowed(
        SENDBIRD_JS,
        "query:custom_types",
        frozenset({"unread-all-types", "unread-super_group-types", "unread-non_super_group-types"}),
        "the other side of the custom_type entry above: the exporter sends the documented plural",
        "as for custom_type",
    ),
    Allowed(
        INTERCOM_NODE,
        "json:sort",
        INTERCOM_CASES,
        "the exporter asks for the oldest waiting conversation first; sort is described in "
        "Intercom's 'Pagination & Sorting (Search)' guide but not in the OpenAPI description "
        "the SDKs are generated from (intercom/Intercom-OpenAPI issue #114), so no SDK sends it",
        "intercom-client dist/cjs/api/types/SearchRequest.d.ts (query and pagination only); "
        "intercom/Intercom-OpenAPI issue #114",
    ),
    Allowed(
        INTERCOM_PYTHON,
        "json:sort",
        INTERCOM_CASES,
        "as for the Node SDK: the generated search request has no sort",
        "python-intercom intercom/conversations/client.py search (query and pagination only)",
    ),
    Allowed(
        INTERCOM_PYTHON,
        "header:intercom-version",
        INTERCOM_CASES,
        "python-intercom 5.0.1 sends no Intercom-Version, so the workspace default applies; "
        "the exporter pins 2.14, the Node SDK's default",
        "intercom/core/client_wrapper.py get_headers",
    ),
    *(
        Allowed(
            reference,
            field,
            INTERCOM_CASES,
            "the Fern-generated SDK names its language, runtime and itself on every request; the "
            "API does not ask for it (none of the reference's requests carries it)",
            "intercom-client dist/cjs/BaseClient.js; python-intercom "
            "intercom/core/client_wrapper.py get_headers (X-Fern-* headers)",
        )
        for reference, fields in (
            (INTERCOM_NODE, ("language", "runtime", "runtime-version", "sdk-name", "sdk-version")),
            (INTERCOM_PYTHON, ("language", "sdk-name", "sdk-version")),
        )
        for field in (f"header:x-fern-{name}" for name in fields)
    ),
    *(
        Allowed(
            reference,
            "header:accept",
            INTERCOM_CASES,
            "the SDK asks for any type (*/*: the Node SDK's fetcher for a request not typed "
            "as JSON, httpx's default for the Python SDK); Intercom answers JSON only (every "
            "documented response is JSON) and the exporter refuses a body that is not JSON as "
            "bad_response, so asking for JSON changes nothing",
            "intercom-client dist/cjs/core/fetcher/Fetcher.js (Accept by responseType); httpx "
            "_client.py (Accept: */*)",
        )
        for reference in (INTERCOM_NODE, INTERCOM_PYTHON)
    ),
    Allowed(
        STREAM_NODE,
        "header:x-stream-client",
        STREAM_CASES,
        "the SDK names itself and its version on every request; the API does not ask for it",
        "stream-chat src/client.ts _enrichAxiosOptions ('X-Stream-Client': getUserAgent())",
    ),
    Allowed(
        STREAM_PYTHON,
        "header:x-stream-client",
        STREAM_CASES,
        "the SDK names itself and its version on every request; the API does not ask for it",
        "stream_chat/client.py get_default_header",
    ),
    Allowed(
        STREAM_NODE,
        "header:x-client-request-id",
        STREAM_CASES,
        "the SDK draws a random id for every request, to match its errors with its requests; "
        "the API does not ask for it",
        "stream-chat src/client.ts _enrichAxiosOptions ('x-client-request-id': randomId())",
    ),
    Allowed(
        STREAM_NODE,
        "header:accept",
        STREAM_CASES,
        "axios's default Accept; Stream answers JSON only and the exporter refuses a body that "
        "is not JSON as bad_response, so which types it accepts changes nothing",
        "axios lib/defaults/index.js (headers.common.Accept)",
    ),
    Allowed(
        STREAM_PYTHON,
        "header:content-type",
        frozenset({"one-user"}),
        "the SDK sends Content-Type: application/json on every request, GETs without a body "
        "included; a GET has no body for it to describe",
        "stream_chat/client.py get_default_header",
    ),
    Allowed(
        ZENDESK_NODE,
        "header:content-type",
        ZENDESK_CASES,
        "node-zendesk sends Content-Type: application/json on every request, GETs without a "
        "body included; a GET has no body for it to describe",
        "node-zendesk src/clients/transporter.js getHeadersForRequest",
    ),
    Allowed(
        ZENDESK_PYTHON,
        "header:accept",
        ZENDESK_CASES,
        "requests' default Accept (*/*); Zendesk answers JSON only and the exporter refuses a "
        "body that is not JSON as bad_response, so asking for JSON changes nothing",
        "requests utils.py default_headers",
    ),
    Allowed(
        ZENDESK_PYTHON,
        "query:count_many",
        frozenset({"views"}),
        "zenpy's views.count_many puts the ids in a parameter named count_many, not the ids= "
        "that Zendesk's reference (Count Tickets in Views) and node-zendesk's showCounts send: "
        "a zenpy bug, so the simulator answers it as a request without ids (400)",
        "zenpy lib/endpoint.py BaseEndpoint.__call__ (key == 'count_many'); "
        "developer.zendesk.com Views API, Count Tickets in Views",
    ),
    Allowed(
        ZENDESK_PYTHON,
        "query:ids",
        frozenset({"views"}),
        "the other side of the count_many entry above: the exporter sends the documented ids=",
        "as for count_many",
    ),
    Allowed(
        ZENDESK_PYTHON,
        "query:per_page",
        frozenset({"search"}),
        "zenpy's search turns every keyword but sort_by and sort_order into a query term, so it "
        "cannot ask for a page size and pages through every result (100 a page by default); the "
        "exporter needs the count and the oldest ticket only, so it asks for one result",
        "zenpy lib/endpoint.py SearchEndpoint.__call__",
    ),
)
