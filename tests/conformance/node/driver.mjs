// Runs a list of calls through the providers' official clients and prints their outcomes.
//
// One process per test module keeps the suite fast. Standard input is a JSON array of
// {"client": "<module in clients/>", "call": "<exported call>", "args": {...}}; standard output
// is a JSON array, in the same order, of {"value": ...} or {"error": ...} (the client's own
// error, described by its module's describeError). Calls run one after another, so a test can
// tell which recorded request belongs to which call.
import { readFileSync } from "node:fs";

// Some clients log to standard output (QuickBlox prints its platform on init): keep standard
// output for the results alone.
for (const level of ["log", "info", "debug", "warn"]) {
  console[level] = console.error;
}

const calls = JSON.parse(readFileSync(0, "utf8"));
const outcomes = [];
for (const { client, call, args } of calls) {
  const module = await import(`./clients/${client}.mjs`);
  try {
    outcomes.push({ value: await module.calls[call](args) });
  } catch (error) {
    outcomes.push({ error: module.describeError(error) });
  }
}
// Clients may leave sockets or timers behind; the results are all that is wanted.
process.stdout.write(JSON.stringify(outcomes), () => process.exit(0));
