// The Jupyter widget manager typesets widget labels with the MathJax 2 call
// `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`; the book serves MathJax 3, so route
// that call to `MathJax.typesetPromise([element])`.
(function () {
  function install() {
    if (window.MathJax && !window.MathJax.Hub) {
      window.MathJax.Hub = {
        Queue: function (job) {
          if (window.MathJax.typesetPromise && Array.isArray(job)) {
            window.MathJax.typesetPromise([job[2]]);
          }
        },
      };
    }
  }
  install();
  document.addEventListener("DOMContentLoaded", install);
})();
