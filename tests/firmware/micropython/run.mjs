// Runs the firmware's pure-module tests inside real MicroPython (the WebAssembly
// port) under node. Usage: node run.mjs <firmware dir> <pure tests dir>
// Prints one line per test and a closing "N passed, N failed"; exits 1 on failure.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const [firmwareDir, testsDir] = process.argv.slice(2);
if (!firmwareDir || !testsDir) {
  console.error("usage: node run.mjs <firmware dir> <pure tests dir>");
  process.exit(2);
}

const mp = await loadMicroPython({
  heapsize: 4 * 1024 * 1024,
  stdout: (line) => console.log(line),
  stderr: (line) => console.error(line),
});

function copyPy(fromDir, toDir) {
  mp.FS.mkdir(toDir);
  for (const name of readdirSync(fromDir)) {
    if (name.endsWith(".py")) {
      mp.FS.writeFile(join(toDir, name), readFileSync(join(fromDir, name)));
    }
  }
}

mp.FS.mkdir("/fw");
copyPy(join(firmwareDir, "iotfw"), "/fw/iotfw");
for (const name of ["boot.py", "main.py"]) {
  mp.FS.writeFile(join("/fw", name), readFileSync(join(firmwareDir, name)));
}
copyPy(testsDir, "/t");
copyPy(join(import.meta.dirname, "stubs"), "/stubs");
const modules = readdirSync(testsDir)
  .filter((n) => n.startsWith("test_") && n.endsWith(".py"))
  .map((n) => n.slice(0, -3));

mp.globals.set("TEST_MODULES", modules.join(","));
await mp.runPythonAsync(`
import sys
sys.path.insert(0, "/t")
sys.path.insert(0, "/fw")
sys.path.append("/stubs")
print(sys.implementation.name, sys.version)
import os
passed = 0
failed = 0
# every firmware file, hardware ones included, must at least compile on MicroPython
for folder in ("/fw", "/fw/iotfw"):
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".py"):
            continue
        path = folder + "/" + fname
        try:
            with open(path) as f:
                compile(f.read(), path, "exec")
        except Exception as exc:
            failed += 1
            print("FAIL", path, "(compile)")
            sys.print_exception(exc)
        else:
            passed += 1
for modname in TEST_MODULES.split(","):
    try:
        mod = __import__(modname)
    except Exception as exc:
        failed += 1
        print("FAIL", modname, "(import)")
        sys.print_exception(exc)
        continue
    for name in sorted(dir(mod)):
        fn = getattr(mod, name)
        if not name.startswith("test_") or not callable(fn):
            continue
        try:
            result = fn()
            if hasattr(result, "send"):  # an async test: await it (top-level await)
                await result
        except Exception as exc:
            failed += 1
            print("FAIL", modname + "::" + name)
            sys.print_exception(exc)
        else:
            passed += 1
            print("ok  ", modname + "::" + name)
RESULT = "%d passed, %d failed" % (passed, failed)
print(RESULT)
`);
const result = mp.globals.get("RESULT");
process.exit(/ 0 failed$/.test(result) ? 0 : 1);
