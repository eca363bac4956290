// walpipe's console: refreshes a page's live part, and sends the actions
// and forms to the control API with the session's CSRF token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const REFRESH_MS = 2000;

function showMessage(text, kind) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let answer = {};
  try { answer = await response.json(); } catch (_) { /* an empty body */ }
  return { status: response.status, answer };
}

async function refresh() {
  const live = document.getElementById("live");
  const auto = document.getElementById("autorefresh");
  if (!live || (auto && !auto.checked)) return;
  const response = await fetch(location.pathname + "?part=live", { credentials: "same-origin" });
  if (response.status === 401) { location.assign("/login?next=" + encodeURIComponent(location.pathname)); return; }
  if (!response.ok) return;
  const next = document.createElement("div");
  next.innerHTML = await response.text();
  const fresh = next.querySelector("#live");
  // A field being typed into is left alone until its form is sent.
  const typing = document.activeElement && document.activeElement.matches("input, select, textarea");
  if (fresh && !(typing && live.contains(document.activeElement))) live.replaceWith(fresh);
}

function jobName() {
  const live = document.getElementById("live");
  return live ? live.dataset.job : "";
}

async function act(button) {
  const question = button.dataset.confirm;
  if (question && !window.confirm(question)) return;
  const job = encodeURIComponent(jobName());
  const action = button.dataset.action;
  const result = action === "delete"
    ? await api("DELETE", "/api/v1/jobs/" + job)
    : await api("POST", "/api/v1/jobs/" + job + "/" + action + "?wait=0",
      button.dataset.cleanup ? { cleanup: true } : undefined);
  if (result.status >= 400) { showMessage(result.answer.error || ("HTTP " + result.status), "error"); return; }
  if (action === "delete") { location.assign("/"); return; }
  showMessage(result.status === 202 ? "Requested: " + action + "." : "", "info");
  await refresh();
}

async function edit(form) {
  const job = encodeURIComponent(jobName());
  const tables = form.elements.tables.value;
  const result = form.dataset.edit === "snapshot"
    ? await api("POST", "/api/v1/jobs/" + job + "/snapshot", { tables })
    : await api("PATCH", "/api/v1/jobs/" + job, { tables });
  if (result.status >= 400) { showMessage(result.answer.error || ("HTTP " + result.status), "error"); return; }
  showMessage(form.dataset.edit === "snapshot" ? "Copy requested." : "Tables set.", "info");
  form.reset();
  await refresh();
}

function showFindings(findings) {
  const list = document.getElementById("findings");
  list.replaceChildren(...findings.map((finding) => {
    const item = document.createElement("li");
    item.className = "finding-" + finding.level;
    item.textContent = finding.level + ": " + finding.text;
    return item;
  }));
}

async function loadTables(select) {
  const box = document.getElementById("tables");
  if (!box || !select.value) return;
  box.textContent = "Loading the tables of " + select.value + "…";
  const result = await api("GET", "/api/v1/datasources/" + encodeURIComponent(select.value) + "/tables");
  if (result.status !== 200) { box.textContent = result.answer.error || ("HTTP " + result.status); return; }
  box.replaceChildren(...result.answer.tables.map((table) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "table";
    box.value = table.table;
    box.checked = true;
    const rows = table.estimated_rows === null ? "rows not counted yet"
      : "~" + table.estimated_rows.toLocaleString("en-US") + " rows";
    label.append(box, " " + table.table + " (" + rows + ")");
    return label;
  }));
}

// The first submit runs the check and shows its findings; the second, on
// the same settings and with no error found, creates and starts the job.
async function create(form) {
  const fields = {};
  for (const name of ["name", "source", "sink", "snapshot_mode", "snapshot_strategy"]) fields[name] = form.elements[name].value;
  for (const name of ["batch_size", "flush_interval_ms"]) fields[name] = Number(form.elements[name].value);
  const boxes = [...form.querySelectorAll('input[name="table"]')];
  const chosen = boxes.filter((box) => box.checked).map((box) => box.value);
  if (boxes.length && !chosen.length) { showMessage("Choose at least one table.", "error"); return; }
  if (chosen.length && chosen.length < boxes.length) fields.tables = chosen.join(", ");
  const button = form.querySelector('button[type="submit"]');
  if (form.dataset.checked !== JSON.stringify(fields)) {
    showMessage("Checking the source and the sink…", "info");
    const checked = await api("POST", "/api/v1/check", fields);
    if (checked.status !== 200) { showMessage(checked.answer.error || ("HTTP " + checked.status), "error"); return; }
    showFindings(checked.answer.findings);
    if (checked.answer.errors > 0) {
      delete form.dataset.checked;
      showMessage("The check found errors: fix them (below), then check again.", "error");
      return;
    }
    form.dataset.checked = JSON.stringify(fields);
    button.textContent = "Create and start";
    showMessage("The check found no error (findings below): create the job?", "info");
    return;
  }
  const created = await api("POST", "/api/v1/jobs", fields);
  if (created.status !== 201) { showMessage(created.answer.error || ("HTTP " + created.status), "error"); return; }
  const path = "/api/v1/jobs/" + encodeURIComponent(fields.name);
  const started = await api("POST", path + "/start?wait=0");
  if (started.status >= 400) { showMessage(started.answer.error, "error"); return; }
  location.assign("/jobs/" + encodeURIComponent(fields.name));
}

async function addDatasource(form) {
  const fields = Object.fromEntries(new FormData(form).entries());
  const saved = await api("POST", "/api/v1/datasources", fields);
  if (saved.status !== 201) { showMessage(saved.answer.error || ("HTTP " + saved.status), "error"); return; }
  location.reload();
}

document.addEventListener("change", (event) => {
  if (event.target.matches('#create-job select[name="source"]')) loadTables(event.target);
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) { event.preventDefault(); act(button); }
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.id === "create-job") { event.preventDefault(); create(form); }
  else if (form.id === "add-datasource") { event.preventDefault(); addDatasource(form); }
  else if (form.dataset.edit) { event.preventDefault(); edit(form); }
});

setInterval(refresh, REFRESH_MS);
const source = document.querySelector('#create-job select[name="source"]');
if (source) loadTables(source);
