// The buyer's page of one sale: the live stream feeds the count and the countdown, the
// button posts a purchase. No build step, no dependencies.
//
// Query parameters (a storefront passes them; for the demo they go in the URL):
//   sku     the sale, when the path is not /sales/<sku>
//   api     the flashsale origin, when the page is served from another one (CORS)
//   user    the buyer's id (sent as user_id unless a ticket names the buyer)
//   ticket  a Buyer-Ticket signed by the storefront
//   token   a storefront bearer token (FLASHSALE_API_TOKENS)
"use strict";

const params = new URLSearchParams(location.search);
const sku = params.get("sku") || decodeURIComponent(location.pathname.split("/").pop());
const api = (params.get("api") || "").replace(/\/$/, "");
const user = params.get("user") || "";
const ticket = params.get("ticket");
const token = params.get("token");

const $ = (id) => document.getElementById(id);
const page = document.querySelector(".sale");
let sale = null;
let skewMs = 0; // server clock minus this browser's clock
let buying = false;

const STATE_TEXT = { scheduled: "coming soon", open: "on sale", sold_out: "sold out", closed: "closed" };
const OUTCOME_TEXT = {
  sold_out: "Sold out: none left for you.",
  user_limit_reached: "You already hold the most this sale allows.",
  sale_not_open: "The sale is not open now.",
  invalid_ticket: "Your buyer ticket is not valid; reload the page from the shop.",
  unauthorized: "The shop's token was refused.",
  unavailable: "The shop is busy; try again in a moment.",
};

function render() {
  if (!sale) return;
  page.dataset.state = sale.state;
  $("sku").textContent = sale.sku;
  $("state").textContent = STATE_TEXT[sale.state] || sale.state;
  $("remaining").textContent = sale.remaining;
  $("stock").textContent = sale.stock;
  $("bar").style.width = (sale.stock ? (100 * sale.remaining) / sale.stock : 0) + "%";
  $("buy").disabled = buying || sale.state !== "open";
  tick();
}

function tick() {
  if (!sale) return;
  const now = Date.now() + skewMs;
  const until = (at, label) => {
    const left = Math.max(0, Date.parse(at) - now);
    const s = Math.floor(left / 1000);
    const hms = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60]
      .map((n) => String(n).padStart(2, "0")).join(":");
    return `${label} ${hms}`;
  };
  let text = "";
  if (sale.state === "scheduled" && sale.starts_at) text = until(sale.starts_at, "Opens in");
  else if (sale.state === "open" && sale.ends_at) text = until(sale.ends_at, "Ends in");
  else if (sale.state === "closed") text = "This sale has ended.";
  $("countdown").textContent = text;
}

function connect() {
  const stream = new EventSource(`${api}/v1/sales/${encodeURIComponent(sku)}/live`);
  stream.addEventListener("sale", (event) => {
    sale = JSON.parse(event.data);
    skewMs = Date.parse(sale.server_time) - Date.now();
    $("connection").textContent = "";
    render();
  });
  // EventSource reconnects by itself (the server asks for 2 s).
  stream.onerror = () => { $("connection").textContent = "reconnecting…"; };
}

function show(outcome, text) {
  $("result").dataset.outcome = outcome;
  $("result").textContent = text;
}

async function buy() {
  buying = true;
  render();
  // One key per click: a retry of the same click would reuse it. randomUUID needs a secure
  // context (https or localhost).
  const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`.slice(2);
  const headers = { "Content-Type": "application/json", "Idempotency-Key": key };
  if (ticket) headers["Buyer-Ticket"] = ticket;
  if (token) headers["Authorization"] = `Bearer ${token}`;
  const body = ticket ? {} : { user_id: user };
  try {
    const response = await fetch(`${api}/v1/sales/${encodeURIComponent(sku)}/orders`, {
      method: "POST", headers, body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.status === 201 || response.status === 202 || response.status === 200) {
      show("created", `Ordered! Order ${answer.order_id} (${answer.status.replace("_", " ")}).`);
    } else if (answer.error === "rate_limited") {
      const wait = response.headers.get("Retry-After") || "a few";
      show("rate_limited", `Too many tries: wait ${wait} s and try again.`);
    } else {
      show(answer.error || "error", OUTCOME_TEXT[answer.error] || answer.message || `Error ${response.status}`);
    }
  } catch (e) {
    show("unreachable", "The shop cannot be reached; check your connection.");
  } finally {
    buying = false;
    render();
  }
}

$("buy").addEventListener("click", buy);
setInterval(tick, 250);
connect();
