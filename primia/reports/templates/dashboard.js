// The dashboard's page script (served as /dashboard.js: the page's policy runs no inline
// script). Values from the coordinator go in as text (textContent), never as markup; the
// charts are SVG the dashboard drew itself with every label escaped.
function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); }
async function poll() {
  let s;
  try { s = await (await fetch("state.json")).json(); } catch (e) { s = {unreachable: "dashboard server stopped"}; }
  const banner = document.getElementById("unreachable");
  if (s.unreachable) { banner.hidden = false; banner.textContent = "coordinator unreachable: " + s.unreachable; return; }
  banner.hidden = true;
  document.getElementById("progress").textContent = `run ${s.run_id} · ${s.state} · ${s.unit} ${s.round} of ${s.rounds}`;
  for (const k of ["auroc", "loss", "epsilon", "epsilon_rounds"]) document.getElementById("chart-" + k).innerHTML = s.charts[k];
  const rounds = document.getElementById("rounds"); rounds.replaceChildren();
  for (const r of s.history) { const tr = rounds.insertRow(); cell(tr, r.round); cell(tr, r.contributors.join(", ")); cell(tr, r.left_out.join(", ")); cell(tr, r.seconds.toFixed(1)); }
  const nodes = document.getElementById("node-rows"); nodes.replaceChildren();
  for (const n of s.nodes) { const tr = nodes.insertRow(); tr.className = "node"; tr.dataset.node = n.name; cell(tr, n.name); cell(tr, n.connected ? "yes" : "no"); cell(tr, n.activity); cell(tr, `${n.epsilon_spent.toFixed(2)} / ${n.epsilon_budget}`); cell(tr, n.rounds_contributed); cell(tr, n.last_refusal); cell(tr, n.device); }
}
// ?poll=SECONDS sets the period (tests poll faster); at least 0.1 s, 2 s by default.
const period = Math.max(0.1, Number(new URLSearchParams(location.search).get("poll")) || 2);
poll(); setInterval(poll, period * 1000);
