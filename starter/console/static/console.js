// The console's only script: conveniences, nothing a page needs to work.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Filters apply as soon as a choice changes.
  for (const form of document.querySelectorAll("form[data-autosubmit]")) {
    for (const select of form.querySelectorAll("select")) {
      select.addEventListener("change", () => form.submit());
    }
  }
  // Clicking a step of the graph highlights it and the edges that touch it.
  const graph = document.querySelector("svg.journey-graph");
  if (graph) {
    graph.addEventListener("click", (event) => {
      const node = event.target.closest("g.node");
      for (const lit of graph.querySelectorAll(".lit")) lit.classList.remove("lit");
      if (!node) return;
      const id = node.dataset.node;
      node.classList.add("lit");
      for (const edge of graph.querySelectorAll("g.edge")) {
        if (edge.dataset.from === id || edge.dataset.to === id) edge.classList.add("lit");
      }
    });
  }
  // Completing a task cannot be undone: ask once.
  for (const button of document.querySelectorAll("button[name=complete]")) {
    button.form.addEventListener("submit", (event) => {
      if (!window.confirm("Complete this task? Its journey hears task_completed.")) {
        event.preventDefault();
      }
    });
  }
});
