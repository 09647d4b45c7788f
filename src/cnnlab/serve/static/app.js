"use strict";
// Draw on the canvas (grey digit models: the server makes drawings MNIST-like), or upload or photograph an image
// (any model). While a stroke goes on, /api/predict updates the bars; when it ends, or an image comes, /api/explain
// adds the feature maps and Grad-CAM. One request at a time: what is asked meanwhile waits, the last ask wins.

const canvas = document.getElementById("canvas");
const pen = canvas.getContext("2d");
const preprocess = document.getElementById("preprocess");
const statusLine = document.getElementById("status");
const methodChoice = document.getElementById("method");  // the attribution method beside Grad-CAM
const INK_WIDTH = 20;  // on the 280 px canvas: about MNIST's pen once a digit is scaled into 20x20
const LIVE_INTERVAL_MS = 150;

let drawable = true;  // the model reads drawings (GET /api/model: preprocessing mnist_like), else uploads only
let hint = "Draw a digit with the mouse or a finger.";
let drawing = false, last = null, drawn = false, lastLive = 0;
let upload = null;  // an uploaded file is sent as it is, until someone draws over it
let busy = false, queued = null;

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function blankCanvas() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, canvas.width, canvas.height);
}

function position(event) {
  const box = canvas.getBoundingClientRect();
  return {x: (event.clientX - box.left) * canvas.width / box.width,
          y: (event.clientY - box.top) * canvas.height / box.height};
}

function stroke(from, to) {
  pen.strokeStyle = "#000";
  pen.lineWidth = INK_WIDTH;
  pen.lineCap = pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(from.x, from.y);
  pen.lineTo(to.x, to.y);
  pen.stroke();
}

canvas.addEventListener("pointerdown", (event) => {
  if (!drawable) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  drawing = true;
  drawn = true;
  upload = null;
  last = position(event);
  stroke(last, last);
});

canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const point = position(event);
  stroke(last, point);
  last = point;
  if (performance.now() - lastLive > LIVE_INTERVAL_MS) {
    lastLive = performance.now();
    ask("predict");
  }
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  ask("explain");
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  blankCanvas();
  showPreview(null);
  drawn = false;
  upload = null;
  queued = null;
  conv = null;
  showEmpty();
  setStatus(hint);
});

async function imageChosen(event) {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  if (drawable) {
    blankCanvas();
    try {  // show it on the canvas (browsers cannot draw TIFF: then the canvas stays white)
      const bitmap = await createImageBitmap(file);
      const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
      const w = bitmap.width * scale, h = bitmap.height * scale;
      pen.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    } catch (error) { /* the server still reads it, or says why not */ }
  } else {
    showPreview(file);
  }
  upload = file;
  drawn = true;
  ask("explain");
}
document.getElementById("upload").addEventListener("change", imageChosen);
document.getElementById("camera").addEventListener("change", imageChosen);

function showPreview(file) {  // the image as sent, where there is no canvas to show it on
  const preview = document.getElementById("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  if (file) preview.src = URL.createObjectURL(file);
  else preview.removeAttribute("src");
  preview.hidden = !file;
}
document.getElementById("preview").addEventListener("error", (event) => { event.target.hidden = true; });  // TIFF

preprocess.addEventListener("change", () => { if (drawn) ask("explain"); });
methodChoice.addEventListener("change", () => { if (drawn) ask("explain"); });

async function imageRequest() {
  if (upload) {
    const form = new FormData();
    form.append("file", upload, upload.name);
    return {method: "POST", body: form};
  }
  return {method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({image: canvas.toDataURL("image/png")})};
}

async function ask(kind) {
  if (!drawn) return;
  if (busy) {
    queued = queued === "explain" ? "explain" : kind;  // an explain asked for is never downgraded
    return;
  }
  busy = true;
  try {
    const method = kind === "explain" ? `&method=${encodeURIComponent(methodChoice.value || "gradcam")}` : "";
    const response = await fetch(`/api/${kind}?preprocess=${preprocess.checked}${method}`, await imageRequest());
    const answer = await response.json();
    if (!drawn) return;  // cleared meanwhile
    if (response.ok) {
      showPrediction(answer);
      if (kind === "explain") {
        showExplanation(answer);
        if (conv) askConv();  // a new image: the same layer, channel and position worked out again
      }
      setStatus(upload ? `Sent ${upload.name}.` : "Draw more, or clear and start again.");
    } else {
      setStatus(answer.detail || `The server answered ${response.status}.`, true);
      showEmpty();
    }
  } catch (error) {
    setStatus(`No answer from the server (${error.message}).`, true);
  } finally {
    busy = false;
    if (queued) {
      const next = queued;
      queued = null;
      ask(next);
    }
  }
}

function buildBars(names) {
  const list = document.getElementById("probabilities");
  list.replaceChildren(...names.map((name, index) => {
    const row = document.createElement("li");
    row.className = "bar";
    row.dataset.index = index;
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span>' +
                    '<span class="value">–</span>';
    row.querySelector(".name").textContent = name;
    return row;
  }));
}

function showPrediction(answer) {
  document.getElementById("prediction").textContent =
    `${answer.prediction.class} (${(100 * answer.prediction.probability).toFixed(1)}%)`;
  for (const entry of answer.probabilities) {
    const row = document.querySelector(`#probabilities .bar[data-index="${entry.index}"]`);
    row.dataset.probability = entry.probability;
    row.classList.toggle("top", entry.index === answer.prediction.index);
    row.querySelector(".fill").style.width = `${100 * entry.probability}%`;
    row.querySelector(".value").textContent = `${(100 * entry.probability).toFixed(1)}%`;
  }
  document.getElementById("input-image").src = `data:image/png;base64,${answer.input_png}`;
}

function showExplanation(answer) {
  document.getElementById("grad-cam").src = `data:image/png;base64,${answer.grad_cam.png}`;
  document.getElementById("grad-cam-caption").textContent =
    `Grad-CAM of “${answer.explained.class}” on ${answer.grad_cam.layer}`;
  document.getElementById("attribution").src = `data:image/png;base64,${answer.attribution.png}`;
  const panels = answer.feature_maps.map((maps) => {
    const panel = document.createElement("figure");
    panel.className = "feature-map-panel";
    const image = document.createElement("img");
    const width = maps.columns * (maps.width + 1) - 1;
    const zoom = Math.max(1, Math.floor(480 / width));  // every layer's mosaic about 480 px wide
    image.src = `data:image/png;base64,${maps.png}`;
    image.style.width = `${width * zoom}px`;
    image.style.cursor = "pointer";
    image.alt = `${maps.channels} feature maps of ${maps.layer}: click one to see how it is made`;
    image.addEventListener("click", (event) => chooseChannel(maps, image, event));
    const caption = document.createElement("figcaption");
    caption.textContent = `${maps.layer}: ${maps.channels} maps of ${maps.height}×${maps.width}`;
    panel.append(caption, image);
    return panel;
  });
  document.getElementById("feature-maps").replaceChildren(...panels);
}

function showEmpty() {
  document.getElementById("prediction").textContent = "";
  for (const row of document.querySelectorAll("#probabilities .bar")) {
    delete row.dataset.probability;
    row.classList.remove("top");
    row.querySelector(".fill").style.width = "0";
    row.querySelector(".value").textContent = "–";
  }
  for (const id of ["input-image", "grad-cam", "attribution"]) document.getElementById(id).removeAttribute("src");
  document.getElementById("grad-cam-caption").textContent = "Grad-CAM: where it looked";
  document.getElementById("feature-maps").innerHTML = '<p class="empty">Send an image to see them.</p>';
  document.getElementById("conv-view").hidden = true;
}

// How one value is made (CNN Explainer's view, for this model): click a channel of a layer's feature-map mosaic,
// then a position in its map; /api/conv works the value out from the layer's input and weights.
let conv = null;  // {layer, channel, y, x, inputChannel}: what is shown

function chooseChannel(maps, image, event) {
  const box = image.getBoundingClientRect();
  const px = Math.floor((event.clientX - box.left) * image.naturalWidth / box.width);
  const py = Math.floor((event.clientY - box.top) * image.naturalHeight / box.height);
  const column = Math.floor(px / (maps.width + 1)), row = Math.floor(py / (maps.height + 1));
  const channel = row * maps.columns + column;
  if (px % (maps.width + 1) === maps.width || py % (maps.height + 1) === maps.height || channel >= maps.channels) return;
  conv = {layer: maps.layer, channel, y: Math.floor(maps.height / 2), x: Math.floor(maps.width / 2), inputChannel: 0};
  askConv();
}

async function askConv() {
  if (!conv || !drawn) return;
  const query = new URLSearchParams({layer: conv.layer, channel: conv.channel, y: conv.y, x: conv.x,
                                     preprocess: preprocess.checked});
  const title = document.getElementById("conv-title");
  try {
    const response = await fetch(`/api/conv?${query}`, await imageRequest());
    const answer = await response.json();
    if (!response.ok) {
      title.textContent = answer.detail || `The server answered ${response.status}.`;
      return;
    }
    showConv(answer);
  } catch (error) {
    title.textContent = `No answer from the server (${error.message}).`;
  }
}

const number = (value) => (Math.abs(value) >= 100 ? value.toFixed(1) : value.toFixed(3));

function redBlue(value, limit) {  // red positive, blue negative, white zero
  const t = Math.min(1, Math.abs(value) / (limit || 1));
  const fade = Math.round(255 * (1 - t));
  return value >= 0 ? `rgb(255,${fade},${fade})` : `rgb(${fade},${fade},255)`;
}

function paintGrid(canvas, rows, colour) {  // one cell per value, the canvas keeps its own size
  const pen = canvas.getContext("2d");
  const cellH = canvas.height / rows.length, cellW = canvas.width / rows[0].length;
  rows.forEach((row, y) => row.forEach((value, x) => {
    pen.fillStyle = colour(value);
    pen.fillRect(x * cellW, y * cellH, Math.ceil(cellW), Math.ceil(cellH));
  }));
  return {pen, cellH, cellW};
}

function channelOf(grid, k) { return grid.map((row) => row.map((cell) => cell[k])); }

function numberTable(rows) {
  const table = document.createElement("table");
  for (const row of rows) {
    const line = table.insertRow();
    for (const value of row) line.insertCell().textContent = number(value);
  }
  return table;
}

function showConv(worked) {
  const [kh, kw] = worked.kernel_size;
  const dilation = worked.dilation.some((d) => d > 1) ? `, dilation ${worked.dilation.join("×")}` : "";
  document.getElementById("conv-title").textContent = `${worked.layer}, channel ${worked.channel}, position ` +
    `(row ${worked.y}, column ${worked.x}): a ${kh}×${kw} kernel, stride ${worked.strides.join("×")}, ` +
    `'${worked.padding}' padding${dilation}, over the layer's ${worked.input_shape.join("×")} input`;
  document.getElementById("conv-note").textContent = worked.note;
  document.getElementById("conv-view").hidden = false;

  const inputCanvas = document.getElementById("conv-input");
  const picture = new Image();
  picture.onload = () => {
    const pen = inputCanvas.getContext("2d");
    pen.imageSmoothingEnabled = false;
    pen.drawImage(picture, 0, 0, inputCanvas.width, inputCanvas.height);
    const field = worked.receptive_field;
    if (!field) return;
    const sy = inputCanvas.height / picture.height, sx = inputCanvas.width / picture.width;
    pen.strokeStyle = "#e11d48";
    pen.lineWidth = 2;
    pen.strokeRect(field.left * sx, field.top * sy, (field.right - field.left + 1) * sx,
                   (field.bottom - field.top + 1) * sy);
  };
  picture.src = `data:image/png;base64,${worked.input_png}`;
  const field = worked.receptive_field;
  document.getElementById("conv-field").textContent = field ?
    `input: the ${field.height}×${field.width} pixels this value depends on (its receptive field)` :
    "input (this model's shape does not tell which pixels the value depends on)";

  const map = worked.feature_map;
  const values = map.flat();
  const low = Math.min(...values), high = Math.max(...values);
  const mapCanvas = document.getElementById("conv-map");
  const {pen, cellH, cellW} = paintGrid(mapCanvas, map, (value) => {
    const level = Math.round(255 * (high > low ? (value - low) / (high - low) : 0));
    return `rgb(${level},${level},${level})`;
  });
  pen.strokeStyle = "#e11d48";
  pen.lineWidth = 2;
  pen.strokeRect(worked.x * cellW, worked.y * cellH, cellW, cellH);
  mapCanvas.onclick = (event) => {
    const box = mapCanvas.getBoundingClientRect();
    conv.y = Math.min(map.length - 1, Math.floor((event.clientY - box.top) / box.height * map.length));
    conv.x = Math.min(map[0].length - 1, Math.floor((event.clientX - box.left) / box.width * map[0].length));
    askConv();
  };

  const limit = Math.max(...worked.kernel.flat(2).map(Math.abs));
  conv.inputChannel = Math.min(conv.inputChannel, worked.input_channels.length - 1);
  const kernels = worked.input_channels.map((source, k) => {
    const thumbnail = document.createElement("canvas");
    thumbnail.width = kw * 6;
    thumbnail.height = kh * 6;
    thumbnail.title = `input channel ${source}: weights for channel ${worked.channel}`;
    paintGrid(thumbnail, channelOf(worked.kernel, k), (value) => redBlue(value, limit));
    thumbnail.addEventListener("click", () => { conv.inputChannel = k; showArithmetic(worked); });
    return thumbnail;
  });
  document.getElementById("conv-kernels").replaceChildren(...kernels);
  showArithmetic(worked);
}

function showArithmetic(worked) {
  const k = conv.inputChannel;
  document.querySelectorAll("#conv-kernels canvas").forEach((c, i) => c.classList.toggle("chosen", i === k));
  const operator = (text) => Object.assign(document.createElement("span"), {className: "operator", textContent: text});
  const caption = (text, table) => {
    const figure = document.createElement("figure");
    figure.append(table, Object.assign(document.createElement("figcaption"), {textContent: text}));
    return figure;
  };
  const source = worked.input_channels[k];
  document.getElementById("conv-arithmetic").replaceChildren(
    caption(`patch of input channel ${source}`, numberTable(channelOf(worked.patch, k))), operator("×"),
    caption("kernel weights", numberTable(channelOf(worked.kernel, k))), operator("="),
    caption("products", numberTable(channelOf(worked.products, k))), operator("→"),
    caption("their sum", numberTable([[worked.channel_sums[k]]])));
  const channels = worked.input_channels.length;
  const step = worked.pointwise ?
    `Σ of the ${channels} depthwise sums × their 1×1 weights = ${number(worked.sum)}` :
    `Σ over ${channels} input channel${channels > 1 ? "s" : ""} of their products = ${number(worked.sum)}`;
  document.getElementById("conv-sum").textContent = `${step}; + bias ${number(worked.bias)} = ` +
    `${number(worked.pre_activation)}; ${worked.activation}(${number(worked.pre_activation)}) = ` +
    `${number(worked.activated)}. The feature map shows ${number(worked.value)}.`;
}

function adaptTo(model) {  // the page for the images this model takes
  const [height, width, channels] = model.image_shape;
  const size = `${height}×${width}`;
  const colours = channels === 3 ? "colour" : "grey";
  drawable = model.preprocessing === "mnist_like";
  document.getElementById("input-caption").textContent = `input, ${size}${channels === 3 ? ", colour" : ""}`;
  document.getElementById("input-image").alt = `the ${size} ${colours} input the model is given`;
  if (drawable) {
    document.getElementById("input-note").textContent = "The input is your drawing or image as MNIST digits " +
      `are made: white ink on black, fitted into a box and centred by its centre of mass in ${size}.`;
    return;
  }
  hint = "Upload an image, or take a photo.";
  document.getElementById("tagline").textContent = "upload an image and watch the network think";
  document.getElementById("draw-title").textContent = "Your image";
  document.getElementById("no-drawing").textContent =
    `This model takes ${size} ${colours} images, not drawings: upload one, or take a photo.`;
  document.getElementById("input-note").textContent = `The input is your image as the model takes it: ` +
    `upright, in ${colours}, resized to ${size}.`;
  for (const id of ["canvas", "preprocess-option"]) document.getElementById(id).hidden = true;
  document.getElementById("no-drawing").hidden = false;
  setStatus(hint);
}

async function start() {
  blankCanvas();
  try {
    const model = await (await fetch("/api/model")).json();
    adaptTo(model);
    buildBars(model.class_names);
    methodChoice.replaceChildren(...Object.entries(model.attribution_methods).map(([method, name]) => {
      const option = document.createElement("option");
      option.value = method;
      option.textContent = name;
      return option;
    }));
    methodChoice.value = "integrated_gradients";  // beside Grad-CAM: the most faithful by deletion and insertion
    document.getElementById("model").textContent =
      `${model.name}: ${model.parameters.toLocaleString("en")} parameters, conv layers ${model.conv_layers.join(", ")}`;
  } catch (error) {
    setStatus(`Cannot reach the server (${error.message}).`, true);
  }
}

start();
