//! `strait status`: every ForeignCluster with the state of each module and,
//! for whatever is not ready, the conditions that say why.
use serde::Serialize;
use strait_api::{
    core::{ForeignCluster, ModuleStatus},
    Condition,
};

use crate::{cli::Output, error::encode_error, Error};

/// One peering as `strait status` shows it (also its JSON/YAML form).
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeeringSummary {
    pub name: String,
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    pub role: String,
    pub modules: Vec<ModuleSummary>,
    /// The ForeignCluster's own aggregated conditions.
    pub conditions: Vec<ConditionSummary>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct ModuleSummary {
    pub module: &'static str,
    pub selected: bool,
    /// Whether the module's controller has written its status yet.
    pub reported: bool,
    pub state: String,
    pub conditions: Vec<ConditionSummary>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct ConditionSummary {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl From<&Condition> for ConditionSummary {
    fn from(c: &Condition) -> Self {
        Self {
            type_: c.type_.clone(),
            status: format!("{:?}", c.status),
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }
}

pub fn summarize(foreign_clusters: &[ForeignCluster]) -> Vec<PeeringSummary> {
    let mut summaries: Vec<PeeringSummary> = foreign_clusters
        .iter()
        .map(|fc| {
            let status = fc.status.as_ref();
            let selected = &fc.spec.modules;
            let modules = status.map(|s| &s.modules);
            let module = |name: &'static str, selected: bool, reported: Option<&ModuleStatus>| {
                ModuleSummary {
                    module: name,
                    selected,
                    reported: reported.is_some(),
                    state: match (reported, selected) {
                        (Some(m), _) => format!("{:?}", m.state),
                        (None, true) => "Pending".to_owned(),
                        (None, false) => "Disabled".to_owned(),
                    },
                    conditions: reported
                        .map(|m| m.conditions.iter().map(Into::into).collect())
                        .unwrap_or_default(),
                }
            };
            PeeringSummary {
                name: fc.metadata.name.clone().unwrap_or_default(),
                cluster_id: fc.spec.cluster_id.clone(),
                role: status.map_or("Unknown".to_owned(), |s| format!("{:?}", s.role)),
                modules: vec![
                    module(
                        "network",
                        selected.network,
                        modules.and_then(|m| m.network.as_ref()),
                    ),
                    module(
                        "authentication",
                        selected.authentication,
                        modules.and_then(|m| m.authentication.as_ref()),
                    ),
                    module(
                        "offloading",
                        selected.offloading,
                        modules.and_then(|m| m.offloading.as_ref()),
                    ),
                ],
                conditions: status
                    .map(|s| s.conditions.iter().map(Into::into).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    summaries
}

/// The table, then one line per condition that is not True, with its
/// reason and message: what a person acts on.
pub fn table(summaries: &[PeeringSummary]) -> String {
    if summaries.is_empty() {
        return "no ForeignClusters: this cluster is not peered (strait peer --help)\n".to_owned();
    }
    let mut rows = vec![[
        "NAME".to_owned(),
        "CLUSTER ID".to_owned(),
        "ROLE".to_owned(),
        "NETWORK".to_owned(),
        "AUTHENTICATION".to_owned(),
        "OFFLOADING".to_owned(),
    ]];
    for s in summaries {
        rows.push([
            s.name.clone(),
            s.cluster_id.clone(),
            s.role.clone(),
            s.modules[0].state.clone(),
            s.modules[1].state.clone(),
            s.modules[2].state.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(line.join("   ").trim_end());
        text.push('\n');
    }
    let mut problems = Vec::new();
    for s in summaries {
        for c in s.conditions.iter().filter(|c| c.status != "True") {
            problems.push(format!(
                "  {}: {}={} {}: {}",
                s.name, c.type_, c.status, c.reason, c.message
            ));
        }
        for m in &s.modules {
            if m.selected && !m.reported {
                problems.push(format!(
                    "  {} {}: no status yet (is strait-controller running with --{}?)",
                    s.name, m.module, m.module
                ));
            } else if m.state == "Pending" && m.conditions.is_empty() {
                problems.push(format!("  {} {}: Pending, being set up", s.name, m.module));
            }
            for c in m.conditions.iter().filter(|c| c.status != "True") {
                problems.push(format!(
                    "  {} {}: {}={} {}: {}",
                    s.name, m.module, c.type_, c.status, c.reason, c.message
                ));
            }
        }
    }
    if !problems.is_empty() {
        text.push_str("\nnot ready:\n");
        for problem in problems {
            text.push_str(problem.trim_end());
            text.push('\n');
        }
    }
    text
}

pub fn render(summaries: &[PeeringSummary], output: Output) -> Result<String, Error> {
    match output {
        Output::Table => Ok(table(summaries)),
        Output::Json => serde_json::to_string_pretty(summaries)
            .map(|s| s + "\n")
            .map_err(|e| encode_error("JSON", e)),
        Output::Yaml => serde_norway::to_string(summaries).map_err(|e| encode_error("YAML", e)),
    }
}
