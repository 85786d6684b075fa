// The refresh loop's timer: one refresh at a time, every REFRESH_MS (less often in a hidden tab), and right away
// when an action asks for it. What a refresh reads is main.js's refreshAll, given to startRefreshing.

const REFRESH_MS = 4000; // live counts, review queue, model versions

let refresh = async () => {};
let timer = null;
let ticking = false; // one refresh at a time; a refresh asked for meanwhile runs right after it
let again = false;

async function tick() {
  clearTimeout(timer);
  if (ticking) {
    again = true;
    return;
  }
  ticking = true;
  try {
    await refresh();
  } finally {
    ticking = false;
  }
  timer = setTimeout(tick, again ? 0 : document.hidden ? 4 * REFRESH_MS : REFRESH_MS);
  again = false;
}

export function refreshNow() {
  clearTimeout(timer);
  timer = setTimeout(tick, 0);
}

export function startRefreshing(job) {
  refresh = job;
  tick();
}
