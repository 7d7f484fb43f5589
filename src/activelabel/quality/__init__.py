"""The feedback loop: the decision and ground-truth store, quality report and drift,
the review queue (Label Studio), and retraining."""

from activelabel.quality.drift import drift_check, js_distance, psi
from activelabel.quality.feedback import FeedbackItem, FeedbackResult, apply_feedback, read_feedback_file
from activelabel.quality.metrics import classification_summary, source_summary
from activelabel.quality.report import build_report, report_from_files, report_from_store
from activelabel.quality.review import label_studio_config, label_studio_tasks, select_for_review
from activelabel.quality.store import DecisionStore, GroundTruth, StoredDecision, record_id_for
from activelabel.quality.training import TrainedModel, learn_online, train_model

__all__ = [
    "DecisionStore",
    "FeedbackItem",
    "FeedbackResult",
    "GroundTruth",
    "StoredDecision",
    "TrainedModel",
    "apply_feedback",
    "build_report",
    "classification_summary",
    "drift_check",
    "js_distance",
    "label_studio_config",
    "label_studio_tasks",
    "learn_online",
    "psi",
    "read_feedback_file",
    "record_id_for",
    "report_from_files",
    "report_from_store",
    "select_for_review",
    "source_summary",
    "train_model",
]
