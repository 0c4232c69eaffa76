// What harness.mjs hands a suite: the server's URL and the npm packages it
// installed into the build tree (outside the source tree, so plain `import`
// cannot find them).
import { createRequire } from "node:module";
import path from "node:path";

export const baseUrl = process.env.ASSISTD_URL;
export const artifactsDir = process.env.ASSISTD_ARTIFACTS;
if (!baseUrl || !process.env.ASSISTD_NPM_DIR) throw new Error("run this suite through tests/serve/js/harness.mjs");

export const requirePackage = createRequire(path.join(process.env.ASSISTD_NPM_DIR, "package.json"));
