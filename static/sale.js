// The buyer's page of one sale: the live stream feeds the count and the countdown, the
// button posts a purchase. A sale with a waiting room first lets the buyer join its line:
// the page shows the buyer's place and about how long until it is admitted (counted on from
// the stream's admitted place and rate), turns the button on once admitted, and sends the
// place's Queue-Token with the purchase. No build step, no dependencies.
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
// The buyer's place in the line, as the join answered: { position, token, admission_ends_at }
// (position null: joined before the start, the place is drawn at draw_at).
let place = null;

const STATE_TEXT = { scheduled: "coming soon", open: "on sale", sold_out: "sold out", closed: "closed" };
const OUTCOME_TEXT = {
  sold_out: "Sold out: none left for you.",
  user_limit_reached: "You already hold the most this sale allows.",
  sale_not_open: "The sale is not open now.",
  invalid_ticket: "Your buyer ticket is not valid; reload the page from the shop.",
  unauthorized: "The shop's token was refused.",
  unavailable: "The shop is busy; try again in a moment.",
  not_admitted: "Not your turn yet: wait for your place in line.",
  admission_expired: "Your turn has passed: the admission lasted its time.",
  invalid_queue_token: "Join the line first.",
  queue_not_open: "The line is not open yet.",
};

// Places admitted now, counted on from the last event at its rate.
function admittedNow(now) {
  const q = sale.queue;
  const since = Math.max(0, now - Date.parse(sale.server_time));
  return q.admitted + Math.floor((q.admit_per_sec * since) / 1000);
}

// Whether the buyer's place may buy now.
function admitted(now) {
  if (!sale.queue) return true;
  if (!place || !place.position) return false;
  if (place.admission_ends_at && now >= Date.parse(place.admission_ends_at)) return false;
  return admittedNow(now) >= place.position;
}

function renderQueue(now) {
  const q = sale.queue;
  $("queue").hidden = !q;
  if (!q) return;
  const over = sale.state === "sold_out" || sale.state === "closed";
  $("join").hidden = !!place || over;
  let text = "";
  if (sale.state === "sold_out") text = "Sold out: the line has closed.";
  else if (sale.state === "closed") text = "The sale has ended.";
  else if (!place) text = "Join the line to buy.";
  else if (!place.position) text = "You are in line: places are drawn when the sale starts.";
  else if (place.admission_ends_at && now >= Date.parse(place.admission_ends_at)) {
    text = "Your turn has passed.";
  } else if (admitted(now)) text = `You are number ${place.position}: it is your turn, buy now.`;
  else if (q.admit_per_sec === 0) text = `You are number ${place.position}: the line is paused.`;
  else {
    const secs = Math.ceil((place.position - admittedNow(now)) / q.admit_per_sec);
    const about = secs < 60 ? `${secs} s` : `${Math.ceil(secs / 60)} min`;
    text = `You are number ${place.position}, about ${about}.`;
  }
  $("place").textContent = text;
}

function render() {
  if (!sale) return;
  page.dataset.state = sale.state;
  $("sku").textContent = sale.sku;
  $("state").textContent = STATE_TEXT[sale.state] || sale.state;
  $("remaining").textContent = sale.remaining;
  $("stock").textContent = sale.stock;
  $("bar").style.width = (sale.stock ? (100 * sale.remaining) / sale.stock : 0) + "%";
  tick();
}

function tick() {
  if (!sale) return;
  const now = Date.now() + skewMs;
  renderQueue(now);
  $("buy").disabled = buying || sale.state !== "open" || !admitted(now);
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

// The buyer's identity, as a purchase sends it.
function buyerRequest(extra) {
  const headers = { "Content-Type": "application/json", ...extra };
  if (ticket) headers["Buyer-Ticket"] = ticket;
  if (token) headers["Authorization"] = `Bearer ${token}`;
  return { headers, body: JSON.stringify(ticket ? {} : { user_id: user }) };
}

async function join() {
  const request = buyerRequest({});
  try {
    const response = await fetch(`${api}/v1/sales/${encodeURIComponent(sku)}/queue`, {
      method: "POST", ...request,
    });
    const answer = await response.json().catch(() => ({}));
    if ([200, 201, 202].includes(response.status)) {
      place = answer;
      // Joined before the start: ask again once the places are drawn.
      if (!answer.position) {
        const wait = Math.max(0, Date.parse(answer.draw_at) - (Date.now() + skewMs)) + 300;
        setTimeout(join, wait);
      }
    } else {
      show(answer.error || "error", OUTCOME_TEXT[answer.error] || answer.message || `Error ${response.status}`);
    }
  } catch (e) {
    show("unreachable", "The shop cannot be reached; check your connection.");
  }
  render();
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
  const extra = { "Idempotency-Key": key };
  if (place && place.token) extra["Queue-Token"] = place.token;
  const request = buyerRequest(extra);
  try {
    const response = await fetch(`${api}/v1/sales/${encodeURIComponent(sku)}/orders`, {
      method: "POST", ...request,
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
$("join").addEventListener("click", join);
setInterval(tick, 250);
connect();
