/* livepulse host page: the "Pin next" panel (insight field `pin_next`, agents.rooms.pin_next).
 *
 * Self-contained, like questions.js: adds its labels to LivePulse.I18N and redraws #pin-next
 * whenever the page has rendered a newer insight (window.livepulseLast) or the language
 * changed. LivePulsePinNext.html(rows) is the pure rendering (HTML string).
 */
(function () {
  "use strict";
  const LP = window.LivePulse;
  Object.assign(LP.I18N.en, {
    pn_title: "Pin next", pn_hint: "by expected GMV of the viewers here now",
    pn_none: "No suggestion yet — waiting for viewers and products",
    pn_expected: "expected {v}",
  });
  Object.assign(LP.I18N.zh, {
    pn_title: "下一个置顶", pn_hint: "按当前观众的预期成交额",
    pn_none: "暂无建议，等待观众和商品数据",
    pn_expected: "预期 {v}",
  });

  /** The panel's body for an insight's `pin_next` rows (or nothing yet). */
  function html(rows) {
    const esc = LP.esc;
    const items = (rows || []).map((r, i) => {
      const reason = (r.reason && (r.reason[LP.lang] || r.reason.en)) || "";
      const name = r.title || r.item_id;
      return `<div class="note info pn-row" data-item="${esc(r.item_id)}">` +
        `<div class="meta"><b>${i + 1}. ${esc(name)}</b> · ${esc(LP.format(r.price, "money"))}` +
        ` · ${esc(LP.t("pn_expected", { v: LP.format(r.expected_gmv, "money") }))}</div>` +
        `<div class="pn-reason">${esc(reason)}</div></div>`;
    }).join("");
    return items || `<div class="empty">${esc(LP.t("pn_none"))}</div>`;
  }

  const refresh = LP.panel("pin-next-panel", "pin-next", "pin_next", html);
  window.LivePulsePinNext = { html, refresh };
})();
