"""From run folders to evidence: collect runs, average over seeds, write tables, figures and fits.

    collect    -- find run folders (complete and unfinished), flatten configs, group sweep cells
    aggregate  -- mean ± std over seeds of every report-card metric, missing values made explicit
    tables     -- Markdown, CSV and LaTeX (booktabs) tables, written atomically
    figures    -- accuracy-vs-experience and learning-speed curves, forgetting / zero-shot / GZSL bars (PDF + PNG)
    scaling    -- metric = a + b · log10(n) fits over a data-size sweep (images per category, or trained
                  categories), and where the line bends
    one_look   -- the mechanism-variant sweeps: runs read back as their variant, grouped, folds pooled
    tags       -- the noisy-tags sweep: zero-shot, GZSL H and attribute accuracy against tag rate and noise

No torch import: reading a thousand report cards takes well under a second.
"""

from continual.results.aggregate import (
    DEFAULT_METRICS, LEARNING_SPEED_KS, METRICS, Cell, GroupSummary, Metric, accuracy_curve, aggregate, anytime_curve, get_metric,
    learning_speed_curve, metric_value, summarize, warnings_for,
)
from continual.results.collect import (
    IGNORED_KEYS, Collection, Group, Run, Unfinished, collect_runs, find_run_dirs, flatten, format_value, group_runs,
    load_run, varying_keys,
)
from continual.results.figures import (display_label, plot_accuracy_curves, plot_anytime_curves, plot_bars,
                                      plot_learning_speed, save_figure)
from continual.results.one_look import (
    MECHANISM_SWITCHES, MECHANISMS, ONE_LOOK_KINDS, OneLookKind, OneLookStudy, mechanism_of, one_look_study,
)
from continual.results.scaling import (
    AXES, DEFAULT_SCALING_METRICS, DIVERSITY_METRICS, LogFit, ScalingAxis, ScalingResult, SegmentFit,
    check_scaling_sweep, fit_log_linear, fit_two_segment, get_axis, plot_scaling, scaling_latex_table,
    scaling_markdown, scaling_per_n_table, scaling_study, scaling_to_dict,
)
from continual.results.tags import TagStudy, plot_tags, tags_study
from continual.results.tables import (
    csv_text, format_cell, latex_escape, latex_table, markdown_table, read_csv, write_tables,
)

__all__ = [
    "AXES", "DEFAULT_METRICS", "DEFAULT_SCALING_METRICS", "DIVERSITY_METRICS", "ScalingAxis", "get_axis",
    "scaling_per_n_table", "IGNORED_KEYS", "LEARNING_SPEED_KS", "MECHANISMS",
    "MECHANISM_SWITCHES", "METRICS", "ONE_LOOK_KINDS", "Cell", "Collection", "Group", "GroupSummary", "LogFit",
    "Metric", "OneLookKind", "OneLookStudy", "Run", "ScalingResult", "SegmentFit", "Unfinished", "accuracy_curve", "anytime_curve",
    "aggregate", "check_scaling_sweep", "collect_runs", "csv_text", "display_label", "find_run_dirs",
    "fit_log_linear", "fit_two_segment", "flatten", "format_cell", "format_value", "get_metric", "group_runs",
    "latex_escape", "latex_table", "learning_speed_curve", "load_run", "markdown_table", "mechanism_of",
    "metric_value", "one_look_study", "plot_accuracy_curves", "plot_anytime_curves", "plot_bars", "plot_learning_speed", "plot_scaling",
    "read_csv", "save_figure", "scaling_latex_table", "scaling_markdown", "scaling_study", "scaling_to_dict",
    "summarize", "varying_keys", "warnings_for", "write_tables", "TagStudy", "plot_tags", "tags_study",
]
