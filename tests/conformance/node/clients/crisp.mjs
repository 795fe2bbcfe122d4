// Crisp's official Node client (npm crisp-api). It rejects with a plain object
// {reason: "error", message: <the body's reason>, code: <HTTP status>, data: {message}}.
import { Crisp } from "crisp-api";

function client({ base, tier, identifier, key }) {
  const crisp = new Crisp();
  crisp.setRestHost(base);
  crisp.authenticateTier(tier, identifier, key);
  return crisp;
}

export const calls = {
  getConversation: (args) => client(args).website.getConversation(args.website, args.session),
  listConversations: (args) =>
    client(args).website.listConversations(args.website, args.page, args.options),
  getConversationMetas: (args) =>
    client(args).website.getConversationMetas(args.website, args.session),
};

export function describeError(error) {
  return { code: error.code, reason: error.message, message: error.data?.message };
}
