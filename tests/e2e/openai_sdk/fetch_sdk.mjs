// Fetches the official `openai` npm package (a pinned version, checked against the registry's
// sha512) into DIR/node_modules/openai, with Node's own fetch and tar from the system: no npm
// needed. Usage: node fetch_sdk.mjs DIR. Exit 77 when the registry cannot be reached (the test
// then reports itself skipped, saying why).
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const VERSION = "5.23.2";  // openai 5.x: no dependencies, Node >= 18
const INTEGRITY = "sha512-MQBzmTulj+MM5O8SKEk/gL8a7s5mktS9zUtAkU257WjvobGc9nKcBuVwjyEEcb9SI8a8Y2G/mzn3vm9n1Jlleg==";
const dir = process.argv[2];
const target = join(dir, "node_modules", "openai");
if (existsSync(join(target, "package.json"))) process.exit(0);
let bytes;
try {
  const res = await fetch(`https://registry.npmjs.org/openai/-/openai-${VERSION}.tgz`);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  bytes = Buffer.from(await res.arrayBuffer());
} catch (e) {
  console.error(`openai SDK test skipped: the npm registry is not reachable from here (${e.message})`);
  process.exit(77);
}
const got = "sha512-" + createHash("sha512").update(bytes).digest("base64");
if (got !== INTEGRITY) {
  console.error(`openai-${VERSION}.tgz: sha512 ${got} is not the registry's ${INTEGRITY}`);
  process.exit(1);
}
mkdirSync(target, { recursive: true });
const tgz = join(dir, `openai-${VERSION}.tgz`);
writeFileSync(tgz, bytes);
execFileSync("tar", ["-xzf", tgz, "-C", target, "--strip-components=1"]);
