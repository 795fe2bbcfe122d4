// Runs calls of the official Node SDKs (intercom-client, stream-chat) given as JSON on stdin
// against the loopback servers they name, and prints each outcome as one JSON array: the
// values the SDK parsed, or the status and error code it reported. The Python conformance test
// (tests/test_conformance_reach.py) records the requests on its side.

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

function conversationsOf(page) {
  return page.data.map((c) => ({ id: c.id, waiting_since: c.waiting_since }));
}

async function intercom(call) {
  const { IntercomClient } = await import("intercom-client"); // each SDK only when asked for
  const client = new IntercomClient({ token: call.token, baseUrl: call.base_url, maxRetries: 0 });
  const page = await client.conversations.search(call.request);
  const out = {
    total_count: page.response.total_count,
    conversations: conversationsOf(page),
    next: page.response.pages?.next?.starting_after ?? null,
  };
  if (call.next_page) {
    await page.getNextPage();
    out.next_conversations = conversationsOf(page);
  }
  return out;
}

async function stream(call) {
  const { StreamChat } = await import("stream-chat");
  const client = new StreamChat(call.api_key, call.api_secret);
  client.setBaseURL(call.base_url);
  if (call.op === "unread") return await client.getUnreadCount(call.user_id);
  return await client.getUnreadCountBatch(call.user_ids);
}

function describe(error) {
  if (error.statusCode !== undefined) return { status: error.statusCode, body: error.body };
  if (error.status !== undefined) return { status: error.status, code: error.code };
  return { message: String(error) };
}

const input = JSON.parse(await readStdin());
const results = [];
for (const call of input) {
  try {
    const value = call.provider === "intercom" ? await intercom(call) : await stream(call);
    results.push({ name: call.name, ok: true, value });
  } catch (error) {
    results.push({ name: call.name, ok: false, error: describe(error) });
  }
}
process.stdout.write(JSON.stringify(results));
