// Stream Chat's official JavaScript SDK (npm stream-chat), server side: constructed with the
// app secret, it signs its own JWT. It rejects with an Error carrying {status, code}.
import { StreamChat } from "stream-chat";

function client({ base, apiKey, apiSecret }) {
  const stream = new StreamChat(apiKey, apiSecret);
  stream.setBaseURL(base);
  return stream;
}

export const calls = {
  getUnreadCount: (args) => client(args).getUnreadCount(args.userId),
  getUnreadCountBatch: (args) => client(args).getUnreadCountBatch(args.userIds),
};

export function describeError(error) {
  return { status: error.status, code: error.code };
}
