// MathJax 3 (assets/mathjax/tex-svg-full.js, copied from the django-static-mathjax package by build_docs.py; the
// full bundle, so no TeX extension is fetched later): the notebooks' `$...$` and `$$...$$` (kept as text by nbconvert) and arithmatex's `\(...\)` in markdown pages.
// SVG output needs no web fonts, so it renders from file:// too.
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true},
  options: {ignoreHtmlClass: 'tex2jax_ignore|mathjax_ignore', processHtmlClass: 'tex2jax_process|mathjax_process|arithmatex'},
  svg: {fontCache: 'global'}
};
