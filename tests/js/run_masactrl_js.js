// Runs javascript/masactrl.js against a fake page: the WebUI's gradioApp, onUiLoaded and
// onOptionsChanged (script.js), and elements found by id. Prints what the script did as JSON.
"use strict";
const fs = require("fs");

const elements = {};
const clicks = [];
function element(id) {
    if (!elements[id]) {
        elements[id] = {id, title: "", querySelector: () => null, click: () => clicks.push(id)};
    }
    return elements[id];
}
global.gradioApp = () => ({getElementById: (id) => element(id)});
const loaded = [];
const changed = [];
global.onUiLoaded = (callback) => loaded.push(callback);
global.onOptionsChanged = (callback) => changed.push(callback);

eval(fs.readFileSync(process.argv[2], "utf8"));

const steps = [];
function optionsChange(checkpoint) {
    global.opts = {sd_model_checkpoint: checkpoint};
    const before = clicks.length;
    changed.forEach((callback) => callback());
    steps.push(clicks.slice(before));
}
loaded.forEach((callback) => callback());
optionsChange("sd15.safetensors");  // the options arrive once the page has them
optionsChange("sd15.safetensors");  // another setting changed
optionsChange("sdxl.safetensors");  // the checkpoint changed
const titles = {};
for (const [id, item] of Object.entries(elements)) {
    if (item.title) {
        titles[id] = item.title;
    }
}
console.log(JSON.stringify({titles, steps}));
