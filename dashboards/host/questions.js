/* livepulse host page: the "Questions from the chat" panel (insight group `questions`).
 *
 * Self-contained: adds its labels to LivePulse.I18N, and redraws the panel #questions
 * whenever the page has rendered a newer insight (window.livepulseLast) or the language
 * changed. LivePulseQuestions.html(questions) is the pure rendering (HTML string).
 */
(function () {
  "use strict";
  const LP = window.LivePulse;
  Object.assign(LP.I18N.en, {
    q_title: "Questions from the chat", q_hint: "unanswered, by topic",
    q_none: "No unanswered questions", q_times: "×{n}", q_since: "since {t}", q_last: "last {t}",
    q_totals: "{asked} asked · {answered} answered · {open} open",
    q_answered_how: "Answered when you pin an item (price, stock, colour, size) or comment on the topic.",
    q_price: "Price", q_size: "Size / fit", q_shipping: "Shipping / delivery", q_stock: "Stock / link",
    q_variant: "Colour / variant", q_material: "Material / quality", q_discount: "Discount / coupon",
    q_other: "Other",
  });
  Object.assign(LP.I18N.zh, {
    q_title: "观众提问", q_hint: "未回答 · 按话题",
    q_none: "暂无未回答的问题", q_times: "×{n}", q_since: "{t} 起", q_last: "最近 {t}",
    q_totals: "共 {asked} 问 · 已答 {answered} · 待答 {open}",
    q_answered_how: "置顶商品（价格、库存、颜色、尺码）或在评论里回应该话题即算已回答。",
    q_price: "价格", q_size: "尺码", q_shipping: "发货物流", q_stock: "库存链接",
    q_variant: "颜色款式", q_material: "材质质量", q_discount: "优惠券", q_other: "其他",
  });

  /** The panel's body for an insight's `questions` group (or nothing yet). */
  function html(questions) {
    const esc = LP.esc;
    const groups = (questions && questions.unanswered) || [];
    const rows = groups.map((g) => {
      const label = LP.t("q_" + g.topic) === "q_" + g.topic ? g.topic : LP.t("q_" + g.topic);
      const since = LP.isNum(g.first_seen) ? LP.t("q_since", { t: LP.format(g.first_seen, "time") }) : "";
      const last = LP.isNum(g.last_seen) ? LP.t("q_last", { t: LP.format(g.last_seen, "time") }) : "";
      const examples = (g.examples || []).map((text) => `<div class="q-example">“${esc(text)}”</div>`).join("");
      return `<div class="note info q-group" data-topic="${esc(g.topic)}" data-count="${esc(g.count)}">` +
        `<div class="meta"><b>${esc(label)}</b> ${esc(LP.t("q_times", { n: g.count }))}` +
        ` · ${esc(since)} · ${esc(last)}</div>${examples}</div>`;
    }).join("");
    const totals = questions ? `<div class="hint q-totals">${esc(LP.t("q_totals", {
      asked: questions.asked || 0, answered: questions.answered || 0, open: questions.open || 0 }))}</div>` : "";
    return (rows || `<div class="empty">${esc(LP.t("q_none"))}</div>`) + totals;
  }

  const refresh = LP.panel("questions-panel", "questions", "questions", html);
  window.LivePulseQuestions = { html, refresh };
})();
