/* The dashboard's theme: light, dark, or as the system says (the default). What the reader picks
 * in the header is remembered in localStorage and set as <html data-theme>; dashboard.css does the
 * rest. Loaded as a plain script in <head>, so the theme is set before the page is drawn. */
"use strict";

(() => {
  const KEY = "enact-theme";
  const root = document.documentElement;

  function stored() {
    try { return localStorage.getItem(KEY) || "system"; } catch (e) { return "system"; }
  }

  function apply(choice) {
    if (choice === "light" || choice === "dark") root.dataset.theme = choice;
    else delete root.dataset.theme;
  }

  apply(stored());

  document.addEventListener("DOMContentLoaded", () => {
    const select = document.getElementById("theme-choice");
    if (!select) return;
    select.value = stored();
    select.addEventListener("change", () => {
      const choice = select.value;
      try {
        if (choice === "system") localStorage.removeItem(KEY);
        else localStorage.setItem(KEY, choice);
      } catch (e) { /* not remembered; it still applies to this page */ }
      apply(choice);
    });
  });
  // Another tab changed it: follow.
  window.addEventListener("storage", (event) => {
    if (event.key !== KEY) return;
    apply(event.newValue || "system");
    const select = document.getElementById("theme-choice");
    if (select) select.value = event.newValue || "system";
  });
})();
