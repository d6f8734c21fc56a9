/* livepulse host pages: labels in two languages, number formats, field binding, SVG charts.
 *
 * Every displayed number is an element with data-field="<JSON path in the room insight>"
 * (e.g. "viewers", "commerce.funnel.add_to_carts", "commerce.top_items.0.gmv") and
 * data-format="<kind>". bindFields() writes the raw value to data-value and the formatted
 * value as the text. Formats are deterministic (no locale):
 *   int     integer as-is                          12345
 *   money   currency sign, 2 decimals              ¥1234.50
 *   pct     ratio 0..1 as percent, 1 decimal       12.5%
 *   rate    integer as-is, otherwise 1 decimal     42 / 3.5
 *   dec2    2 decimals                             0.37
 *   signed  2 decimals with explicit sign          +0.32 / -0.10
 *   dur     seconds as "Ns" or "Mm Ss"             45s / 3m 12s
 *   time    epoch ms as local HH:MM:SS             14:03:27
 * A missing value is shown as "–" and has no data-value.
 * The currency is the engine's LIVEPULSE_CURRENCY, served in <meta name="livepulse-currency">
 * (¥ for CNY; a code without a known sign is written before the amount: "CHF 12.00").
 */
(function () {
  "use strict";

  const I18N = {
    en: {
      rooms_title: "Live rooms", rooms_count: "{n} live rooms", no_rooms: "No live rooms yet — waiting for events…",
      all_rooms: "All rooms", live: "LIVE", ended: "ENDED",
      st_connecting: "Connecting…", st_live: "Live", st_reconnecting: "Reconnecting…",
      st_offline: "Engine unreachable, retrying…", st_not_found: "Room not live",
      st_unauthorized: "Access denied: open this page with its host link (?token=…)",
      st_quiet: "No changes for {s}s", updated_ago: "updated {s}s ago",
      not_found_banner: "This room is not live right now (or not found). The page will update when it starts.",
      viewers: "Viewers now", unique_viewers: "Unique viewers", peak_viewers: "Peak viewers",
      gmv: "GMV", gmv_per_min: "GMV / min", orders: "Orders", orders_per_min: "Orders / min",
      sentiment: "Comment mood", mood_short: "Mood", events_total: "Events", last_update: "Last update",
      viewers_chart: "Viewers", last_5_min: "last 5 min", waiting_data: "Waiting for data…",
      audience: "Audience", new_viewers: "New", returning_viewers: "Returning",
      avg_watch: "Avg watch", median_watch: "Median watch", retention_1m: "Stay 1 min",
      retention_5m: "Stay 5 min", retention_15m: "Stay 15 min", hll_note: "HyperLogLog estimate",
      engagement: "Engagement", activity: "Activity in the last minute", comments_per_min: "Comments / min", likes_per_min: "Likes / min",
      gifts_per_min: "Gifts / min", shares_per_min: "Shares / min",
      comments_per_viewer_min: "Comments / viewer·min", likes_per_viewer_min: "Likes / viewer·min",
      shares_per_viewer_min: "Shares / viewer·min", gift_value_per_min: "Gift value / min",
      top_viewers: "Most engaged viewers", user: "Viewer", score: "Score", comments: "Comments",
      likes: "Likes", gifts: "Gifts",
      mood: "Comment mood", positive: "Positive", negative: "Negative", neutral: "Neutral",
      positive_share: "Positive share", negative_share: "Negative share", mood_comments: "Comments",
      window_s: "last {s}s", keywords: "Keywords", no_keywords: "No comments yet",
      commerce: "Sales funnel", product_clicks: "Product clicks", add_to_carts: "Add to cart",
      purchases: "Purchases", click_to_cart: "click → cart", cart_to_purchase: "cart → order",
      click_to_purchase: "click → order", gmv_trend: "GMV / min trend",
      top_items: "Top items", item: "Item", clicks: "Clicks", carts: "Carts", no_items: "No product activity yet",
      pinned: "Pinned now", pinned_none: "No product pinned",
      alerts: "Alerts", suggestions: "Suggestions", no_alerts: "No alerts", no_suggestions: "No suggestions right now",
      windows: "Windows", this_min: "This minute", last_min: "Last minute", last_5min: "Last 5 min",
      last_hour: "Last hour", joins: "Joins", leaves: "Leaves", late_events: "Late events",
      grace: "grace {s}s", schema: "schema", events_last: "last event",
      sev_info: "info", sev_warn: "warning", sev_urgent: "urgent",
      sev_warning: "warning", sev_critical: "critical", alert_open: "open", alert_resolved: "resolved",
      m_viewers: "viewers", m_join_rate: "joins", m_leave_rate: "leaves", m_comment_rate: "comments",
      m_like_rate: "likes", m_gift_rate: "gifts", m_cart_rate: "add-to-carts", m_gmv_rate: "GMV",
      m_conversion: "conversion",
      last_10_min: "last 10 min", last_hour_hint: "per minute, last hour",
      gmv_chart: "GMV / min", orders_chart: "Orders / min", st_stale: "Data {s}s old",
      stale_banner: "No new events for {s}s: the numbers are as of {time}. The room may be idle, or the engine behind.",
    },
    zh: {
      rooms_title: "直播间", rooms_count: "{n} 个直播中", no_rooms: "暂无直播间，等待事件…",
      all_rooms: "全部直播间", live: "直播中", ended: "已结束",
      st_connecting: "连接中…", st_live: "实时", st_reconnecting: "重新连接中…",
      st_offline: "无法连接引擎，重试中…", st_not_found: "直播间未开播",
      st_unauthorized: "无权访问：请用主播专属链接打开本页（?token=…）",
      st_quiet: "{s} 秒无变化", updated_ago: "{s} 秒前更新",
      not_found_banner: "该直播间当前未开播（或不存在）。开播后页面会自动更新。",
      viewers: "在线观众", unique_viewers: "累计观众", peak_viewers: "峰值在线",
      gmv: "成交额", gmv_per_min: "每分钟成交额", orders: "订单数", orders_per_min: "每分钟订单",
      sentiment: "评论情绪", mood_short: "情绪", events_total: "事件数", last_update: "最近更新",
      viewers_chart: "在线人数", last_5_min: "最近 5 分钟", waiting_data: "等待数据…",
      audience: "观众", new_viewers: "新观众", returning_viewers: "回访观众",
      avg_watch: "平均观看", median_watch: "观看中位数", retention_1m: "停留 1 分钟",
      retention_5m: "停留 5 分钟", retention_15m: "停留 15 分钟", hll_note: "HyperLogLog 估算",
      engagement: "互动", activity: "最近一分钟互动", comments_per_min: "每分钟评论", likes_per_min: "每分钟点赞",
      gifts_per_min: "每分钟礼物", shares_per_min: "每分钟分享",
      comments_per_viewer_min: "人均每分钟评论", likes_per_viewer_min: "人均每分钟点赞",
      shares_per_viewer_min: "人均每分钟分享", gift_value_per_min: "每分钟礼物价值",
      top_viewers: "最活跃观众", user: "观众", score: "活跃分", comments: "评论",
      likes: "点赞", gifts: "礼物",
      mood: "评论情绪", positive: "正面", negative: "负面", neutral: "中性",
      positive_share: "正面占比", negative_share: "负面占比", mood_comments: "评论数",
      window_s: "最近 {s} 秒", keywords: "热词", no_keywords: "暂无评论",
      commerce: "转化漏斗", product_clicks: "商品点击", add_to_carts: "加购",
      purchases: "下单", click_to_cart: "点击 → 加购", cart_to_purchase: "加购 → 下单",
      click_to_purchase: "点击 → 下单", gmv_trend: "每分钟成交额走势",
      top_items: "热销商品", item: "商品", clicks: "点击", carts: "加购", no_items: "暂无商品互动",
      pinned: "当前讲解", pinned_none: "暂无讲解商品",
      alerts: "告警", suggestions: "建议", no_alerts: "暂无告警", no_suggestions: "暂无建议",
      windows: "时间窗口", this_min: "本分钟", last_min: "上一分钟", last_5min: "最近 5 分钟",
      last_hour: "最近 1 小时", joins: "进入", leaves: "离开", late_events: "迟到事件",
      grace: "宽限 {s} 秒", schema: "版本", events_last: "最近事件",
      sev_info: "提示", sev_warn: "注意", sev_urgent: "紧急",
      sev_warning: "警告", sev_critical: "严重", alert_open: "进行中", alert_resolved: "已恢复",
      m_viewers: "在线观众", m_join_rate: "进入", m_leave_rate: "离开", m_comment_rate: "评论",
      m_like_rate: "点赞", m_gift_rate: "礼物", m_cart_rate: "加购", m_gmv_rate: "成交额",
      m_conversion: "转化率",
      last_10_min: "最近 10 分钟", last_hour_hint: "每分钟，最近 1 小时",
      gmv_chart: "每分钟成交额", orders_chart: "每分钟订单", st_stale: "数据已 {s} 秒未更新",
      stale_banner: "已 {s} 秒没有新事件：数字停留在 {time}。直播间可能暂时无互动，或引擎处理滞后。",
    },
  };

  const STORAGE_KEY = "livepulse.lang";
  const langListeners = [];

  function detectLang() {
    try {
      const saved = localStorage.getItem(STORAGE_KEY);
      if (saved === "en" || saved === "zh") return saved;
    } catch (e) { /* storage may be disabled */ }
    const prefs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    return String(prefs[0] || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  }

  let lang = detectLang();

  function t(key, vars) {
    let text = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
    if (vars) for (const name of Object.keys(vars)) text = text.replace("{" + name + "}", vars[name]);
    return text;
  }

  function applyLabels(root) {
    (root || document).querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.getAttribute("data-i18n"));
    });
    document.querySelectorAll(".lang button[data-lang]").forEach((btn) => {
      btn.setAttribute("aria-pressed", String(btn.getAttribute("data-lang") === lang));
    });
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  }

  function setLang(next) {
    lang = next === "zh" ? "zh" : "en";
    try { localStorage.setItem(STORAGE_KEY, lang); } catch (e) { /* ignore */ }
    applyLabels();
    langListeners.forEach((fn) => fn(lang));
  }

  function initLang() {
    document.querySelectorAll(".lang button[data-lang]").forEach((btn) => {
      btn.addEventListener("click", () => setLang(btn.getAttribute("data-lang")));
    });
    applyLabels();
  }

  // ------------------------------------------------------------------ formats
  const pad = (n, width) => String(n).padStart(width || 2, "0");
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  const CURRENCY_SIGNS = { CNY: "¥", JPY: "¥", USD: "$", EUR: "€", GBP: "£", KRW: "₩", HKD: "HK$", TWD: "NT$" };
  const currencyMeta = document.querySelector('meta[name="livepulse-currency"]');
  const metaCode = currencyMeta ? currencyMeta.getAttribute("content") || "" : "";
  const currency = /^[A-Z]{3}$/.test(metaCode) ? metaCode : "CNY";
  const currencySign = CURRENCY_SIGNS[currency] || currency + " ";

  const FORMATS = {
    int: (v) => (Number.isInteger(v) ? String(v) : String(Math.round(v))),
    money: (v) => (v < 0 ? "-" : "") + currencySign + Math.abs(v).toFixed(2),
    pct: (v) => (v * 100).toFixed(1) + "%",
    rate: (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)),
    dec2: (v) => v.toFixed(2),
    signed: (v) => (v > 0 ? "+" : v < 0 ? "-" : "") + Math.abs(v).toFixed(2),
    dur: (v) => {
      const total = Math.round(v);
      return total < 60 ? total + "s" : Math.floor(total / 60) + "m " + (total % 60) + "s";
    },
    time: (v) => {
      const d = new Date(v);
      return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    },
  };

  function format(value, kind) {
    if (!isNum(value)) return "–";
    return (FORMATS[kind] || FORMATS.int)(value);
  }

  function get(obj, path) {
    let cur = obj;
    for (const part of path.split(".")) {
      if (cur === null || cur === undefined) return undefined;
      cur = cur[part];
    }
    return cur;
  }

  /** Fill every [data-field] under root from data (raw value in data-value, formatted text). */
  function bindFields(root, data) {
    root.querySelectorAll("[data-field]").forEach((el) => {
      const value = get(data, el.getAttribute("data-field"));
      const text = format(value, el.getAttribute("data-format") || "int");
      if (isNum(value)) el.setAttribute("data-value", String(value));
      else el.removeAttribute("data-value");
      if (el.textContent !== text) el.textContent = text;
    });
  }

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function sentimentClass(value) {
    if (!isNum(value)) return "neu";
    return value > 0.15 ? "pos" : value < -0.15 ? "neg" : "neu";
  }

  // ------------------------------------------------------------------ SVG charts
  const GRID_LINES = 4;
  let chartCount = 0;  // unique gradient ids when a page has many charts

  /** Top of the y axis: GRID_LINES round steps (1, 2, 2.5, 4, 5 x 10^k) covering value. */
  function niceMax(value, integer) {
    if (!(value > 0)) return integer ? GRID_LINES : 1;
    const raw = value / GRID_LINES;
    const exp = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const unit of [1, 2, 2.5, 4, 5, 10]) {
      const step = unit * exp;
      if (step >= raw && (!integer || Number.isInteger(step))) return step * GRID_LINES;
    }
    return Math.max(1, Math.ceil(raw)) * GRID_LINES;
  }

  function axisLabel(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(value % 1e6 ? 1 : 0) + "M";
    if (value >= 1e4) return (value / 1e3).toFixed(value % 1e3 ? 1 : 0) + "k";
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }

  /**
   * Time-series line chart into an <svg> that fills its box.
   * series: [{points: [[t_ms, value], ...], color, fill, width}]
   * opts: {from, to, axes (default true), minMax, refLine (dashed level), integer}
   */
  function lineChart(svg, series, opts) {
    const box = svg.getBoundingClientRect();
    const width = Math.max(80, Math.round(box.width)), height = Math.max(40, Math.round(box.height));
    const axes = opts.axes !== false;
    const left = axes ? 44 : 2, right = axes ? 10 : 2, top = axes ? 10 : 4, bottom = axes ? 22 : 4;
    const plotW = width - left - right, plotH = height - top - bottom;
    const from = opts.from, to = opts.to, span = Math.max(1, to - from);
    let max = Math.max(opts.minMax || 0, isNum(opts.refLine) ? opts.refLine : 0);
    for (const s of series) for (const p of s.points) if (p[1] > max) max = p[1];
    max = niceMax(max * 1.05, opts.integer);
    const x = (tms) => left + ((tms - from) / span) * plotW;
    const y = (v) => top + plotH - (v / max) * plotH;
    const parts = [];
    if (axes) {
      for (let i = 0; i <= GRID_LINES; i++) {
        const v = (max / GRID_LINES) * i, yy = y(v).toFixed(1);
        parts.push(`<line class="grid-line" x1="${left}" x2="${width - right}" y1="${yy}" y2="${yy}"/>`);
        parts.push(`<text x="${left - 6}" y="${(+yy + 4).toFixed(1)}" text-anchor="end">${axisLabel(v)}</text>`);
      }
      const stepS = [10, 15, 30, 60, 120, 300].find((step) => span / 1000 / step <= 6) || 600;
      for (let back = 0; back * 1000 <= span; back += stepS) {
        const xx = x(to - back * 1000).toFixed(1);
        if (xx < left + 14) break;
        const zh = lang === "zh";
        const label = back === 0 ? (zh ? "现在" : "now")
          : back % 60 === 0 ? `-${back / 60}${zh ? "分" : "m"}` : `-${back}${zh ? "秒" : "s"}`;
        parts.push(`<text x="${xx}" y="${height - 5}" text-anchor="${back === 0 ? "end" : "middle"}">${label}</text>`);
      }
    }
    if (isNum(opts.refLine) && opts.refLine > 0) {
      const yy = y(opts.refLine).toFixed(1);
      parts.push(`<line x1="${left}" x2="${width - right}" y1="${yy}" y2="${yy}" stroke="#f5a524" stroke-width="1.2" stroke-dasharray="4 3" opacity=".8"/>`);
    }
    series.forEach((s, index) => {
      const pts = s.points.filter((p) => p[0] >= from - 2000);
      if (!pts.length) return;
      const coords = pts.map((p) => `${x(Math.max(p[0], from)).toFixed(1)},${y(p[1]).toFixed(1)}`);
      if (s.fill) {
        if (!svg.dataset.chartId) svg.dataset.chartId = String(++chartCount);
        const gid = `lp-chart${svg.dataset.chartId}-g${index}`;
        parts.push(`<defs><linearGradient id="${gid}" x1="0" y1="0" x2="0" y2="1">` +
          `<stop offset="0" stop-color="${s.color}" stop-opacity=".35"/>` +
          `<stop offset="1" stop-color="${s.color}" stop-opacity="0"/></linearGradient></defs>`);
        const first = coords[0].split(",")[0], last = coords[coords.length - 1].split(",")[0];
        parts.push(`<path d="M${first},${top + plotH} L${coords.join(" L")} L${last},${top + plotH} Z" fill="url(#${gid})"/>`);
      }
      parts.push(`<polyline points="${coords.join(" ")}" fill="none" stroke="${s.color}" stroke-width="${s.width || 2}" stroke-linejoin="round" stroke-linecap="round"/>`);
      const end = coords[coords.length - 1].split(",");
      parts.push(`<circle cx="${end[0]}" cy="${end[1]}" r="${axes ? 3.5 : 2.5}" fill="${s.color}"/>`);
    });
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.innerHTML = parts.join("");
  }

  /** Half-circle gauge for a value in -1..1 (comment sentiment). */
  function gauge(svg, value) {
    const cx = 100, cy = 100, r = 80;
    const point = (v, radius) => {
      const angle = Math.PI * (1 - (v + 1) / 2);
      return [cx + radius * Math.cos(angle), cy - radius * Math.sin(angle)];
    };
    const arc = (a, b, color) => {
      const [x1, y1] = point(a, r), [x2, y2] = point(b, r);
      return `<path d="M${x1.toFixed(1)},${y1.toFixed(1)} A${r},${r} 0 0 1 ${x2.toFixed(1)},${y2.toFixed(1)}" stroke="${color}" stroke-width="14" fill="none" stroke-linecap="butt"/>`;
    };
    const parts = [arc(-1, -0.15, "rgba(244,82,106,.85)"), arc(-0.15, 0.15, "rgba(141,149,165,.6)"),
      arc(0.15, 1, "rgba(52,211,153,.85)")];
    if (isNum(value)) {
      const v = Math.max(-1, Math.min(1, value));
      const [nx, ny] = point(v, r - 16);
      parts.push(`<line x1="${cx}" y1="${cy}" x2="${nx.toFixed(1)}" y2="${ny.toFixed(1)}" stroke="#e9ebf0" stroke-width="3" stroke-linecap="round"/>`);
    }
    parts.push(`<circle cx="${cx}" cy="${cy}" r="6" fill="#e9ebf0"/>`);
    parts.push(`<text x="22" y="118" fill="#5b6374" font-size="11" text-anchor="middle">-1</text>`);
    parts.push(`<text x="178" y="118" fill="#5b6374" font-size="11" text-anchor="middle">+1</text>`);
    svg.setAttribute("viewBox", "0 0 200 124");
    svg.innerHTML = parts.join("");
  }

  // ------------------------------------------------------------------ access token
  // When the engine requires a token (LIVEPULSE_API_TOKEN), a host opens the page with
  // ?token=<host token> once; it is kept in sessionStorage (this tab only) and sent as a
  // Bearer header with fetch, and as ?token= with EventSource (which cannot send headers).
  const TOKEN_KEY = "livepulse-token";
  let cachedToken = null;
  function token() {
    if (cachedToken !== null) return cachedToken;
    const fromUrl = new URLSearchParams(location.search).get("token");
    try {
      if (fromUrl) sessionStorage.setItem(TOKEN_KEY, fromUrl);
      cachedToken = fromUrl || sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      cachedToken = fromUrl || "";
    }
    return cachedToken;
  }
  function authFetch(url, options) {
    const tk = token();
    const opts = Object.assign({}, options || {});
    if (tk) opts.headers = Object.assign({}, opts.headers || {}, { Authorization: "Bearer " + tk });
    return fetch(url, opts);
  }
  function withToken(url) {
    const tk = token();
    return tk ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(tk) : url;
  }

  // A self-contained panel of the room page (pin_next.js, portrait.js, questions.js): its
  // labels applied, and #containerId redrawn with render(insight[group]) whenever the page
  // has rendered a newer insight (window.livepulseLast) or the language changed. Checking a
  // few times a second keeps the panels out of the page's own render code. Returns refresh.
  function panel(panelId, containerId, group, render) {
    let shown = null;
    let shownLang = null;
    function refresh() {
      const el = document.getElementById(containerId);
      const ins = window.livepulseLast;
      if (!el || (ins === shown && lang === shownLang)) return;
      shown = ins;
      shownLang = lang;
      el.innerHTML = render(ins && ins[group]);
    }
    applyLabels(document.getElementById(panelId) || document);
    langListeners.push(refresh);
    setInterval(refresh, 250);
    refresh();
    return refresh;
  }

  window.LivePulse = {
    I18N, t, setLang, initLang, applyLabels, onLang: (fn) => langListeners.push(fn),
    get lang() { return lang; },
    currency, currencySign,
    format, get, bindFields, esc, sentimentClass, lineChart, gauge, isNum,
    token, authFetch, withToken, panel,
  };
})();
