// Loads the console's WebAssembly (a module script: the page allows no inline scripts).
import init from "./wasmq_console.js";
init();
