// Builds xrayd's study viewport into ../xrayd/web/static/viewer/ (committed; see README.md).
// Deterministic: fixed file names, no hashes, no timestamps, no absolute paths in the output,
// so a rebuild from package-lock.json gives the committed bytes (tests/unit/test_viewer_bundle.py).
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, rmSync, existsSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(process.argv[2] || join(here, "..", "xrayd", "web", "static", "viewer"));
const loader = join(here, "node_modules", "@cornerstonejs", "dicom-image-loader", "dist", "esm");

// xrayd serves every image as uncompressed Explicit VR Little Endian (xrayd/web/wado.py
// transcodes on the server), so the browser needs no codec: the WebAssembly and JavaScript
// decoders of compressed syntaxes are replaced by a stub that refuses (no wasm, no
// 'wasm-unsafe-eval' in the Content-Security-Policy, a far smaller bundle).
const CODECS = /shared[\\/]decoders[\\/]decode(HTJ2K|JPEG2000|JPEGLS|JPEGXL|JPEGLossless|JPEGBaseline8Bit|JPEGBaseline12Bit-js)\.js$/;
const STUB = `export function initialize() { return Promise.resolve(); }
export default function decode() {
  throw new Error("compressed pixel data: xrayd serves uncompressed images only");
}`;

// vtk.js's XML reader/writer (for meshes, which xrayd never loads) needs Node's "url" and
// "events" through xmlbuilder2: left out the same way.
const UNUSED = /^xmlbuilder2$/;
const UNUSED_STUB = `export function create() { throw new Error("XML meshes are not part of xrayd's viewer"); }
export default { create };`;

const leaveOut = {
  name: "leave-out",
  setup(b) {
    b.onLoad({ filter: CODECS }, () => ({ contents: STUB, loader: "js" }));
    b.onResolve({ filter: UNUSED }, (args) => ({ path: args.path, namespace: "unused" }));
    b.onLoad({ filter: /.*/, namespace: "unused" }, () => ({ contents: UNUSED_STUB, loader: "js" }));
  },
};

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });

const result = await build({
  entryPoints: {
    "xrayd-viewport": join(here, "src", "main.js"),
    // init.js starts it as new URL('./decodeImageFrameWorker.js', import.meta.url): same folder
    decodeImageFrameWorker: join(loader, "decodeImageFrameWorker.js"),
  },
  outdir,
  entryNames: "[name]",
  bundle: true,
  format: "esm",
  splitting: false,
  minify: true,
  sourcemap: false,
  target: ["chrome110", "firefox115", "safari16"],
  legalComments: "none", // the licences go to THIRD_PARTY_LICENSES.txt below
  charset: "utf8",
  define: { "process.env.NODE_ENV": '"production"' },
  plugins: [leaveOut],
  metafile: true,
  logLevel: "warning",
});

if (process.env.VIEWER_METAFILE) {
  writeFileSync(process.env.VIEWER_METAFILE, JSON.stringify(result.metafile));
}

// The licence text of every package that ended up in the bundle, sorted by name.
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (m) packages.add(m[1]);
}
const sections = [];
for (const name of [...packages].sort()) {
  const dir = join(here, "node_modules", name);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).sort().find((f) => /^(licen[cs]e|copying)/i.test(f));
  const text = file ? readFileSync(join(dir, file), "utf8").trim() : "(no licence file shipped)";
  sections.push(`== ${name} ${pkg.version} (${pkg.license || "see text"}) ==\n\n${text}\n`);
}
writeFileSync(
  join(outdir, "THIRD_PARTY_LICENSES.txt"),
  "Third-party code bundled in xrayd-viewport.js and decodeImageFrameWorker.js\n\n" +
    sections.join("\n"),
);
for (const f of readdirSync(outdir).sort()) {
  const size = readFileSync(join(outdir, f)).length;
  console.log(`${f}\t${(size / 1024).toFixed(1)} KiB`);
}
if (!existsSync(join(outdir, "xrayd-viewport.js"))) process.exit(1);
