//! Which node reads which split in a distributed query: rendezvous
//! (highest random weight) hashing of each file's path over the workers,
//! so a file goes to the same node query after query and is read from that
//! node's read cache (Parquet footers, trace-id and full-text indexes)
//! instead of being fetched again by whichever node the library's
//! round-robin picked. When a node joins or leaves, only the files it wins
//! or held move.
//!
//! Two `datafusion-distributed` hooks: [`scale_up_scan`] splits a Parquet
//! scan into one variant per task, task `i` reading the files whose
//! winner is the `i`-th worker (sorted); [`route_scan_tasks`] sends task
//! `i` to that worker. Whole files go to a task (the library's default
//! would also cut files into byte ranges, spreading one file's reads over
//! several nodes). Scans that declare an output ordering or partitioning
//! are left to the library, whose splitting keeps them.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion_distributed::{
    DistributedGetterExt, DistributedLeafExec, RouteTasksEvent, RouteTasksEventResponse,
    ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse,
};
use url::Url;

/// The index in `workers` of the one `path` goes to: the highest
/// `hash(path, worker)`. A stable hash (FNV-1a, then MurmurHash3's
/// finalizer so that addresses differing in one digit still weigh
/// independently), so every node of the cluster computes the same answer.
pub fn rendezvous(path: &str, workers: &[Url]) -> Option<usize> {
    (0..workers.len())
        .max_by_key(|&i| fnv1a(&[path.as_bytes(), b"\0", workers[i].as_str().as_bytes()]))
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The workers tasks go to, in task order: the first `task_count` of the
/// sorted list (the same rule at planning and at routing).
fn task_workers(workers: Vec<Url>, task_count: usize) -> Vec<Url> {
    let mut workers = workers;
    workers.sort();
    workers.truncate(task_count);
    workers
}

fn splittable_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    let config = plan
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    (config.output_ordering.is_empty() && config.output_partitioning.is_none()).then_some(config)
}

/// Scale-up handler: a Parquet scan becomes one variant per task, each
/// reading the files its worker wins, in as many partitions as the scan had.
pub fn scale_up_scan(ev: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let config = splittable_scan(ev.plan)?;
    let workers = match ev
        .session_config
        .get_distributed_worker_resolver()
        .and_then(|r| r.get_urls())
    {
        Ok(workers) => task_workers(workers, ev.task_count),
        Err(e) => return Some(Err(e)),
    };
    if workers.len() != ev.task_count {
        return None; // Fewer workers than tasks: the library's split.
    }
    let partitions = ev.plan.output_partitioning().partition_count().max(1);
    let mut per_task: Vec<Vec<Vec<_>>> = vec![vec![Vec::new(); partitions]; ev.task_count];
    let mut taken = vec![0usize; ev.task_count];
    for file in config.file_groups.iter().flat_map(|g| g.iter()) {
        let task = rendezvous(file.object_meta.location.as_ref(), &workers)?;
        per_task[task][taken[task] % partitions].push(file.clone());
        taken[task] += 1;
    }
    let variants = per_task.into_iter().map(|groups| {
        let mut scan = config.clone();
        scan.file_groups = groups.into_iter().map(FileGroup::new).collect();
        DataSourceExec::from_data_source(scan) as Arc<dyn ExecutionPlan>
    });
    Some(
        DistributedLeafExec::try_new(Arc::clone(ev.plan), variants)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

/// Routing handler: a stage that reads a file scan sends task `i` to the
/// `i`-th worker, the one [`scale_up_scan`] gave its files to.
pub fn route_scan_tasks(ev: RouteTasksEvent) -> Option<Result<RouteTasksEventResponse>> {
    let mut scans = false;
    let found = ev.plan.apply(|node| {
        if let Some(leaf) = node.downcast_ref::<DistributedLeafExec>()
            && splittable_scan(leaf.original()).is_some()
        {
            scans = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Err(e) = found {
        return Some(Err(e));
    }
    if !scans {
        return None;
    }
    let workers = match ev
        .task_ctx
        .session_config()
        .get_distributed_worker_resolver()
        .and_then(|r| r.get_urls())
    {
        Ok(workers) => task_workers(workers, ev.task_count),
        Err(e) => return Some(Err(e)),
    };
    if workers.is_empty() {
        return None;
    }
    let urls = (0..ev.task_count)
        .map(|i| workers[i % workers.len()].clone())
        .collect();
    Some(Ok(RouteTasksEventResponse::new(urls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(ports: &[u16]) -> Vec<Url> {
        ports
            .iter()
            .map(|p| Url::parse(&format!("http://127.0.0.1:{p}")).unwrap())
            .collect()
    }

    #[test]
    fn a_file_keeps_its_worker_unless_its_worker_leaves() {
        let all = urls(&[7001, 7002, 7003, 7004]);
        let paths: Vec<String> = (0..400)
            .map(|i| format!("logs/date=2026-12-03/{i:04}.parquet"))
            .collect();
        let owner = |workers: &[Url], p: &str| workers[rendezvous(p, workers).unwrap()].clone();
        // Spread: every worker gets a fair share.
        for w in &all {
            let n = paths.iter().filter(|p| owner(&all, p) == *w).count();
            assert!((60..=140).contains(&n), "{w}: {n} of 400");
        }
        // The same answer whatever the order of the list.
        let mut reversed = all.clone();
        reversed.reverse();
        assert!(paths.iter().all(|p| owner(&all, p) == owner(&reversed, p)));
        // One worker leaves: only its files move.
        let fewer: Vec<Url> = all
            .iter()
            .filter(|u| u.port() != Some(7003))
            .cloned()
            .collect();
        for p in &paths {
            let before = owner(&all, p);
            if before.port() != Some(7003) {
                assert_eq!(owner(&fewer, p), before, "{p}");
            }
        }
        assert_eq!(rendezvous("x", &[]), None);
    }
}
