// Study page verdict panel: one-key verdicts and inline validation.
// No inline scripts (Content-Security-Policy): this file is the panel's only code.
//
// Keys (not while typing in a field, not with Ctrl/Alt/Meta): A agree and save, D open the
// correction and focus it, Enter save the correction (Ctrl+Enter inside the comment), N next
// study needing attention, ? show/hide the help. The form is sent with fetch
// (Accept: application/json): a refusal (422) comes back as {detail, errors: [{field,
// message}]} shown beside the fields, the page stays; a saved review goes to the location the
// server names (the study page saying "Review saved", or the next study).
(function () {
  "use strict";

  const form = document.getElementById("review-form");
  if (!form) return;
  const agree = document.getElementById("agree");
  const save = document.getElementById("save-review");
  const saveNext = document.getElementById("save-next");
  const correction = document.getElementById("correction");
  const summary = document.getElementById("review-errors");
  const status = document.getElementById("review-status");
  const help = document.getElementById("key-help");
  const helpToggle = document.getElementById("help-toggle");
  const nextUrl = form.dataset.nextUrl;
  const FIELDS = ["verdict", "fracture", "count", "hardware", "body_part", "comment", "label"];
  let busy = false;

  // The server's messages (not the browser's bubbles) are the ones shown, in the same place.
  form.noValidate = true;
  helpToggle.hidden = false;

  function say(text) {
    status.textContent = text;
  }

  // -- inline errors ---------------------------------------------------------------------

  function fieldOf(name) {
    return document.getElementById("field-" + name);
  }

  function clearErrors() {
    for (const name of FIELDS) {
      const message = document.getElementById("error-" + name);
      if (message) {
        message.hidden = true;
        message.textContent = "";
      }
      const field = fieldOf(name);
      if (field && name !== "verdict") {
        field.removeAttribute("aria-invalid");
        field.removeAttribute("aria-describedby");
      }
    }
    summary.hidden = true;
    summary.replaceChildren();
  }

  function showErrors(errors) {
    clearErrors();
    const list = document.createElement("ul");
    let first = null;
    for (const { field: name, message } of errors) {
      const known = FIELDS.includes(name) ? name : "label";
      const slot = document.getElementById("error-" + known);
      if (slot && slot.hidden) {
        slot.textContent = message;
        slot.hidden = false;
      }
      const field = fieldOf(known);
      if (field && known !== "verdict") {
        field.setAttribute("aria-invalid", "true");
        field.setAttribute("aria-describedby", "error-" + known);
      }
      if (known !== "verdict") correction.open = true;
      first = first || focusTarget(known);
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = known === "label" ? "#correction" : "#field-" + known;
      link.textContent = message;
      item.append(link);
      list.append(item);
    }
    const intro = document.createElement("p");
    intro.textContent = "The review was not saved:";
    summary.replaceChildren(intro, list);
    summary.hidden = false;
    (first || summary).focus();
  }

  function focusTarget(name) {
    if (name === "verdict") return null;
    if (name === "label") return firstCorrectionField();
    const field = fieldOf(name);
    if (!field) return null;
    if (field.matches("fieldset")) {
      return field.querySelector("input:checked") || field.querySelector("input");
    }
    return field;
  }

  function firstCorrectionField() {
    const group = fieldOf("fracture");
    return group.querySelector("input:checked") || group.querySelector("input");
  }

  // -- sending -----------------------------------------------------------------------------

  async function send(submitter) {
    if (busy) return;
    busy = true;
    const body = new URLSearchParams(new FormData(form, submitter));
    if (submitter.dataset.next) body.set("next", "1");
    say("Saving…");
    let answer;
    try {
      answer = await fetch(form.action, {
        method: "POST",
        body,
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
    } catch (err) {
      busy = false;
      say("Not saved: xrayd could not be reached. Nothing you entered is lost; try again.");
      return;
    }
    const json = (answer.headers.get("content-type") || "").includes("application/json");
    const data = json ? await answer.json() : null;
    if (answer.ok && data && data.location) {
      say("Saved.");
      window.location.replace(data.location);
      return;
    }
    busy = false;
    if (answer.status === 422 && data && Array.isArray(data.errors)) {
      say("Not saved: see the messages beside the fields.");
      showErrors(data.errors);
    } else if (answer.status === 401) {
      say("Not saved: your session has ended. Log in again in another tab, then save.");
    } else if (answer.status === 403) {
      say("Not saved: the form is out of date. Reload the page and review again.");
    } else {
      const detail = data && typeof data.detail === "string" ? ": " + data.detail : "";
      say("Not saved (" + answer.status + ")" + detail + ".");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const submitter = event.submitter || save;
    send(submitter);
  });

  function agreeAndSave() {
    if (agree.disabled) {
      const why = document.getElementById("agree-blocked");
      say("Agree is not possible here. " + (why ? why.textContent : ""));
      return;
    }
    form.requestSubmit(agree);
  }

  function saveCorrection(andNext) {
    if (!correction.open) {
      say("Nothing to save yet: Agree (A), or Disagree (D) and correct the label.");
      return;
    }
    form.requestSubmit(andNext && saveNext ? saveNext : save);
  }

  function openCorrection() {
    correction.open = true;
    const first = firstCorrectionField();
    if (first) first.focus();
  }

  // -- the correction: a finding without fracture counts none ------------------------------

  form.addEventListener("change", (event) => {
    const target = event.target;
    if (target.name !== "fracture") return;
    const zero = form.querySelector('input[name="count"][value="0"]');
    if (target.value === "absent") {
      zero.checked = true;
    } else if (zero.checked) {
      zero.checked = false; // present: the radiologist chooses 1 or 2+
    }
  });

  // -- keys --------------------------------------------------------------------------------

  function typing(el) {
    if (!el || el === document.body) return false;
    if (el.isContentEditable) return true;
    if (el.matches("textarea, select")) return true;
    return el.matches("input") && !el.matches('[type="radio"], [type="checkbox"], [type="button"], [type="submit"], [type="reset"]');
  }

  function activates(el) {
    // Enter on these does their own thing (press a button, follow a link, toggle the summary).
    return !!el && el.matches("button, a[href], summary, input[type='submit'], input[type='button']");
  }

  function toggleHelp(show) {
    const visible = show === undefined ? help.hidden : show;
    help.hidden = !visible;
    helpToggle.setAttribute("aria-expanded", String(visible));
    if (visible) help.scrollIntoView({ block: "nearest" });
  }

  helpToggle.addEventListener("click", () => toggleHelp());

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing || event.altKey || event.metaKey) return;
    const target = event.target;
    if (event.key === "Enter") {
      if (event.ctrlKey) {
        if (target.matches && target.matches("textarea") && form.contains(target)) {
          event.preventDefault();
          saveCorrection();
        }
        return;
      }
      if (activates(target) || (target.matches && target.matches("textarea"))) return;
      if (target !== document.body && !form.contains(target)) return;
      event.preventDefault();
      saveCorrection(event.shiftKey);  // Shift+Enter: save and go to the next study
      return;
    }
    if (event.ctrlKey || typing(target)) return;
    switch (event.key) {
      case "a":
      case "A":
        event.preventDefault();
        agreeAndSave();
        break;
      case "d":
      case "D":
        event.preventDefault();
        openCorrection();
        break;
      case "n":
      case "N":
        event.preventDefault();
        window.location.assign(nextUrl);
        break;
      case "?":
        event.preventDefault();
        toggleHelp();
        break;
      case "Escape":
        if (!help.hidden) {
          event.preventDefault();
          toggleHelp(false);
          helpToggle.focus();
        }
        break;
      default:
        break;
    }
  });
})();
