// node-zendesk, the community Zendesk client on npm (Zendesk publishes no official Node
// client for the Support API). It rejects with an Error carrying {statusCode, result}.
import zendesk from "node-zendesk"; // a CommonJS module: no named exports

const { createClient } = zendesk;

function client({ base, email, token, query }) {
  return createClient({
    username: email,
    token,
    subdomain: "acme",
    endpointUri: `${base}/api/v2`,
    // throw the response check's own error ({statusCode, result}), not a message-only one
    throwOriginalException: true,
    // client-wide query parameters, added to every request: how this client sends a sort
    ...(query ? { query } : {}),
  });
}

export const calls = {
  // views.showCounts: GET /api/v2/views/count_many.json?ids=
  viewCounts: async ({ ids, ...auth }) => (await client(auth).views.showCounts(ids)).result,
  // views.showCount: GET /api/v2/views/{id}/count.json
  viewCount: async ({ id, ...auth }) => (await client(auth).views.showCount(id)).result,
  // search.query: GET /api/v2/search.json?query=
  search: async ({ q, ...auth }) => {
    const { result } = await client(auth).search.query(q);
    return result.map((ticket) => ({ id: ticket.id, created_at: ticket.created_at }));
  },
  // search.showResultsCount: GET /api/v2/search/count.json?query=
  count: async ({ q, ...auth }) => (await client(auth).search.showResultsCount(q)).result,
  // groups.list: every page of GET /api/v2/groups.json
  groups: async (auth) =>
    (await client(auth).groups.list()).map((group) => ({ id: group.id, name: group.name })),
};

export function describeError(error) {
  return { status: error.statusCode, message: error.message, body: error.result ?? null };
}
