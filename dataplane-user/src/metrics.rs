//! Prometheus text exposition of the datapath's counters, read from the
//! pinned maps at each scrape (the maps are the source of truth; nothing is
//! cached in the agent).

use std::fmt::Write as _;

use crate::{bpffs::PinDir, counter::CounterSnapshot, fabric::FabricStats, Error};

/// Renders every Strait counter found in `pin_dir`.
pub fn render(pin_dir: &PinDir) -> Result<String, Error> {
    let mut out = String::new();
    let fabric = FabricStats::read_pinned(pin_dir)?;
    family(
        &mut out,
        "strait_fabric_packets_total",
        "Packets handled by the Geneve fabric programs, by action.",
    );
    for row in &fabric.counters {
        let _ = writeln!(
            out,
            "strait_fabric_packets_total{{action=\"{}\"}} {}",
            row.name, row.packets
        );
    }
    family(
        &mut out,
        "strait_fabric_bytes_total",
        "Inner bytes handled by the Geneve fabric programs, by action.",
    );
    for row in &fabric.counters {
        let _ = writeln!(
            out,
            "strait_fabric_bytes_total{{action=\"{}\"}} {}",
            row.name, row.bytes
        );
    }
    family(
        &mut out,
        "strait_drops_total",
        "Packets dropped by Strait's datapath, by reason.",
    );
    for reason in strait_common::DropReason::ALL {
        let _ = writeln!(
            out,
            "strait_drops_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            fabric.drops.get(reason)
        );
    }
    let traffic = CounterSnapshot::read_pinned(pin_dir)?;
    family(
        &mut out,
        "strait_interface_packets_total",
        "Packets seen by the traffic counters.",
    );
    for row in &traffic.rows {
        let _ = writeln!(
            out,
            "strait_interface_packets_total{{ifindex=\"{}\",direction=\"{}\",class=\"{}\",proto=\"{}\"}} {}",
            row.ifindex,
            row.direction,
            row.class,
            crate::counter::ip_proto_name(row.ip_proto),
            row.packets
        );
    }
    Ok(out)
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
}
