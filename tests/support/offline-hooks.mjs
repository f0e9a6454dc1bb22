// Preloaded (node --import) by the no-network test into every thread of the process, the inference thread
// included: records each outbound connection, DNS lookup or fetch attempted, one line per attempt, in the file
// OFFLINE_LOG names, and one "thread N" line per thread it was loaded into.
import { appendFileSync } from "node:fs";
import net from "node:net";
import dns from "node:dns";
import { threadId } from "node:worker_threads";

const log = (line) => appendFileSync(process.env.OFFLINE_LOG, `${line}\n`);
log(`thread ${threadId}`);
const origConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  log(`attempt connect ${JSON.stringify(args[0])}`);
  return origConnect.apply(this, args);
};
for (const fn of ["lookup", "resolve", "resolve4", "resolve6"]) {
  const orig = dns[fn];
  dns[fn] = (...args) => {
    log(`attempt dns.${fn} ${args[0]}`);
    return orig.apply(dns, args);
  };
}
const origFetch = globalThis.fetch;
globalThis.fetch = (...args) => {
  log(`attempt fetch ${String(args[0])}`);
  return origFetch(...args);
};
