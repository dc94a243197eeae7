// Runs javascript/masactrl.js against a fake page: the WebUI's gradioApp, onUiLoaded and
// onOptionsChanged (script.js), and elements found by id. Prints what the script did as JSON.
"use strict";
const fs = require("fs");

const elements = {};
const clicks = [];
function element(id) {
    if (!elements[id]) {
        const listeners = [];
        elements[id] = {
            id, title: "", querySelector: () => null, click: () => clicks.push(id), listeners,
            addEventListener: (type, callback) => listeners.push({type, callback}),
        };
    }
    return elements[id];
}
function titlesNow() {
    const titles = {};
    for (const [id, item] of Object.entries(elements)) {
        if (item.title) {
            titles[id] = item.title;
        }
    }
    return titles;
}
// A radio input inside the layout radio group changes: the event bubbles to the group.
function chooseLayout(tab, value) {
    const group = element(`script_${tab}_masactrl_layout`);
    group.listeners.filter((listener) => listener.type === "change").forEach(
        (listener) => listener.callback({target: {value}}));
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
const titles = titlesNow();
element("script_txt2img_masactrl_mode").title = "a title of another extension";
chooseLayout("txt2img", "one source");
chooseLayout("img2img", "one source");
const oneSource = titlesNow();
chooseLayout("txt2img", "pairs");
const pairsAgain = titlesNow();
console.log(JSON.stringify({titles, steps, oneSource, pairsAgain}));
