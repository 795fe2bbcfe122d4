// Sendbird's official Platform SDK for JavaScript (npm sendbird-platform-sdk), generated from
// the OpenAPI spec. It rejects with superagent's error: {status, response: {headers, body}}.
import sendbird from "sendbird-platform-sdk";

const RATE_LIMIT_HEADERS = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"];

function users(base) {
  return new sendbird.UserApi(new sendbird.ApiClient(base));
}

export const calls = {
  viewNumberOfUnreadItems: async ({ base, token, userId, itemKeys, customType }) => {
    const opts = customType === undefined ? { itemKeys } : { itemKeys, customType };
    return { ...(await users(base).viewNumberOfUnreadItems(token, userId, opts)) };
  },
  listMyGroupChannels: async ({ base, token, userId, opts }) => ({
    ...(await users(base).listMyGroupChannels(token, userId, opts)),
  }),
  viewNumberOfUnreadMessages: async ({ base, token, userId }) => ({
    ...(await users(base).viewNumberOfUnreadMessages(token, userId, {})),
  }),
};

export function describeError(error) {
  const headers = error.response?.headers ?? {};
  return {
    status: error.status,
    body: error.response?.body ?? null,
    headers: Object.fromEntries(RATE_LIMIT_HEADERS.filter((h) => h in headers).map((h) => [h, headers[h]])),
  };
}
