// The model's page: its metadata from api/model, and a form that runs one item through api/model/run.
// Plain browser JavaScript, no build step and nothing from elsewhere: the page works offline.
"use strict";

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function row(table, cells) {
  const tr = table.querySelector("tbody").appendChild(element("tr"));
  for (const cell of cells) tr.appendChild(element("td", {}, cell));
  return tr;
}

function showMetadata(model) {
  document.title = `${model.name} ${model.version}`;
  document.getElementById("model-name").textContent = model.name;
  document.getElementById("model-version").textContent = `Version ${model.version} · by ${model.author}`;
  document.getElementById("model-summary").textContent = model.description.summary;
  if (model.description.details) {
    document.getElementById("model-details").textContent = model.description.details;
    document.getElementById("model-details-box").hidden = false;
  }
  const inputs = document.getElementById("inputs");
  const fields = document.getElementById("file-fields");
  for (const [name, file] of Object.entries(model.inputs)) {
    row(inputs, [name, file.acceptedMediaTypes.join(", "), file.maxSize, file.description]);
    const label = fields.appendChild(element("label", { class: "file" }, `${name} `));
    label.appendChild(
      element("input", { type: "file", name: name, accept: file.acceptedMediaTypes.join(","), required: "" }),
    );
  }
  const outputs = document.getElementById("outputs");
  for (const [name, file] of Object.entries(model.outputs)) {
    row(outputs, [name, file.mediaType, file.maxSize, file.description]);
  }
}

function bytesOf(base64) {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function showOutput(container, name, file) {
  const box = container.appendChild(element("div", { class: "output", "data-file": name }));
  box.appendChild(element("h3", {}, `${name} (${file.mediaType})`));
  if ("json" in file) {
    box.appendChild(element("pre", { class: "json" }, JSON.stringify(file.json, null, 2)));
    return;
  }
  if (file.mediaType.startsWith("image/")) {
    box.appendChild(element("img", { src: `data:${file.mediaType};base64,${file.base64}`, alt: name }));
  }
  const blob = new Blob([bytesOf(file.base64)], { type: file.mediaType });
  box.appendChild(element("a", { href: URL.createObjectURL(blob), download: name, class: "download" }, `Download ${name}`));
}

function showResult(httpStatus, answer) {
  document.getElementById("result").hidden = false;
  const status = document.getElementById("result-status");
  const error = document.getElementById("error");
  const outputs = document.getElementById("result-outputs");
  outputs.replaceChildren();
  if (answer.success) {
    status.textContent = "Succeeded";
    status.className = "ok";
    error.hidden = true;
    for (const [name, file] of Object.entries(answer.outputs)) showOutput(outputs, name, file);
  } else {
    status.textContent = `Failed (HTTP ${httpStatus})`;
    status.className = "failed";
    error.textContent = answer.error ?? (typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail));
    error.hidden = false;
  }
}

async function run(event) {
  event.preventDefault();
  const form = event.target;
  const body = new FormData(form);
  for (const flag of ["explain", "detect_drift"]) body.set(flag, form.elements[flag].checked ? "true" : "false");
  const button = document.getElementById("run");
  button.disabled = true;
  document.getElementById("result-status").textContent = "Running…";
  try {
    const response = await fetch("api/model/run", { method: "POST", body });
    const answer = await response.json().catch(() => ({ detail: response.statusText }));
    showResult(response.status, answer);
  } catch (failure) {
    showResult(0, { success: false, error: `the server did not answer: ${failure}` });
  } finally {
    button.disabled = false;
  }
}

async function start() {
  const response = await fetch("api/model");
  showMetadata(await response.json());
  document.getElementById("run-form").addEventListener("submit", run);
  document.body.dataset.ready = "true";
}

start().catch((failure) => {
  document.getElementById("model-name").textContent = `Could not read the model's metadata: ${failure}`;
});
