// Destructive admin actions ask first: a form with data-confirm="question" is sent only after
// the browser's confirmation dialog is accepted. (A script file: the CSP allows no inline code.)
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
  if (!window.confirm(form.dataset.confirm)) event.preventDefault();
});
