// QuickBlox's official JavaScript SDK (npm quickblox). Its configuration is a module-wide
// singleton, so every call initialises it again. Errors come back through the callback as
// {code: <HTTP status>, message: <body>, detail: <body.errors>}.
import QB from "quickblox";

function init({ api, token, appId, authKey, authSecret }) {
  const config = { endpoints: { api }, debug: { mode: 0 } };
  if (token) {
    QB.init(token, appId, null, config);
  } else {
    QB.init(appId, authKey, authSecret, config);
  }
}

function callback(start) {
  return new Promise((resolve, reject) => {
    start((error, result) => (error ? reject(error) : resolve(result)));
  });
}

// The SDK draws the nonce from Math.random() (floor(random * 10000)) and the timestamp from
// Date.now(): both are fixed while the signed message is built, so the signature can be
// compared with the exporter's for the same nonce and timestamp.
function createSession({ nonce, timestamp, login, password }) {
  const params = login ? { login, password } : {};
  return callback((done) => {
    const [random, now] = [Math.random, Date.now];
    if (nonce !== undefined) {
      Math.random = () => (nonce + 0.5) / 10000;
      Date.now = () => timestamp * 1000 + 500;
    }
    try {
      QB.createSession(params, done);
    } finally {
      [Math.random, Date.now] = [random, now];
    }
  });
}

function expiry() {
  const date = QB.service.qbInst.config.qbTokenExpirationDate;
  return date && !Number.isNaN(date.getTime()) ? date.getTime() / 1000 : null;
}

export const calls = {
  createSession: async (args) => {
    init(args);
    const session = await createSession(args);
    return { session, expires: expiry() };
  },
  unreadCount: async (args) => {
    init(args);
    return await callback((done) => QB.chat.message.unreadCount(args.params, done));
  },
  sessionThenUnread: async (args) => {
    init(args);
    const session = await createSession(args);
    const expires = expiry();
    const unread = await callback((done) => QB.chat.message.unreadCount(args.params, done));
    return { userId: session.user_id, expires, unread };
  },
  listDialogs: async (args) => {
    init(args);
    return await callback((done) => QB.chat.dialog.list(args.params ?? {}, done));
  },
  listUsers: async (args) => {
    init(args);
    return await callback((done) => QB.users.listUsers({}, done));
  },
};

export function describeError(error) {
  return { code: error.code, detail: error.detail ?? null, message: String(error.message) };
}
