//! Where a new topic's partitions go: Kafka's rack-unaware round-robin assignment. Partition
//! `p`'s first replica (its preferred leader) is broker `(start + p) mod n` of the brokers
//! sorted by id; the other replicas follow it at a shift that grows by one every `n`
//! partitions, so leaders and followers both spread evenly. `start` and `shift` are drawn at
//! random by the caller (Kafka does the same), which keeps this a pure function.

/// Replicas for `partitions` partitions of `replication_factor` over `brokers` (ids, any
/// order). The caller has checked `1 <= replication_factor <= brokers.len()`.
pub fn assign(
    brokers: &[i32],
    partitions: i32,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Vec<Vec<i32>> {
    let mut brokers = brokers.to_vec();
    brokers.sort_unstable();
    brokers.dedup();
    let n = brokers.len();
    assert!(n > 0 && (1..=n).contains(&replication_factor), "{replication_factor} replicas over {n} brokers");
    let start = start % n;
    let mut shift = shift % n;
    (0..partitions.max(0) as usize)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (p + start) % n;
            let mut replicas = vec![brokers[first]];
            for j in 0..replication_factor - 1 {
                let step = 1 + (shift + j) % (n - 1);
                replicas.push(brokers[(first + step) % n]);
            }
            replicas
        })
        .collect()
}

/// Checks an explicit assignment (CreateTopics' `assignments`): every partition names
/// `replication_factor` distinct brokers, all of them registered.
pub fn check_assignment(assignment: &[Vec<i32>], registered: &[i32]) -> Result<(), String> {
    let Some(rf) = assignment.first().map(Vec::len) else {
        return Err("the assignment names no partitions".into());
    };
    for (p, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return Err(format!("Partition {p} has no replicas"));
        }
        if replicas.len() != rf {
            return Err("All partitions should have the same number of replicas".into());
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != replicas.len() {
            return Err(format!("Duplicate brokers not allowed in replica assignment: {replicas:?} for partition {p}"));
        }
        if let Some(unknown) = replicas.iter().find(|b| !registered.contains(b)) {
            return Err(format!(
                "Replica assignment for partition {p} names broker {unknown}, which is not registered"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn leaders_spread_round_robin_from_the_start() {
        let a = assign(&[3, 1, 2], 6, 1, 1, 0);
        let leaders: Vec<i32> = a.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, vec![2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn followers_are_distinct_and_shift_every_round() {
        // Kafka's documented example: 5 brokers, 10 partitions, 3 replicas, start 0, shift 0.
        let a = assign(&[0, 1, 2, 3, 4], 10, 3, 0, 0);
        assert_eq!(a[0], vec![0, 1, 2]);
        assert_eq!(a[4], vec![4, 0, 1]);
        assert_eq!(a[5], vec![0, 2, 3]);
        assert_eq!(a[9], vec![4, 1, 2]);
        for replicas in &a {
            let mut r = replicas.clone();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), 3);
        }
    }

    #[test]
    fn every_broker_gets_its_share_whatever_the_draw() {
        for start in 0..7 {
            for shift in 0..7 {
                let a = assign(&[10, 20, 30, 40, 50, 60, 70], 70, 3, start, shift);
                let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
                let mut replicas: BTreeMap<i32, usize> = BTreeMap::new();
                for r in &a {
                    *leaders.entry(r[0]).or_default() += 1;
                    for b in r {
                        *replicas.entry(*b).or_default() += 1;
                    }
                }
                assert!(leaders.values().all(|n| *n == 10), "{start}/{shift}: {leaders:?}");
                assert!(replicas.values().all(|n| *n == 30), "{start}/{shift}: {replicas:?}");
            }
        }
    }

    #[test]
    fn explicit_assignments_are_checked() {
        assert!(check_assignment(&[vec![1], vec![2]], &[1, 2]).is_ok());
        assert!(check_assignment(&[vec![1, 1]], &[1, 2]).expect_err("refused").contains("Duplicate"));
        assert!(check_assignment(&[vec![1], vec![1, 2]], &[1, 2]).expect_err("refused").contains("same number"));
        assert!(check_assignment(&[vec![9]], &[1, 2]).expect_err("refused").contains("broker 9"));
        assert!(check_assignment(&[vec![]], &[1]).is_err());
    }
}
