//! The fleet's state: cells, placeables, where each placeable is, and the
//! policy the decisions apply.
//!
//! Owns: [`Fleet`], which keeps a cell's use equal to its base use plus the
//! demand of every placeable on it (a placeable that is moving counts on both
//! of its cells), and the index from anti-affinity groups to their members.
//! Must never: decide anything. Filters and scores live in `place`, plans in
//! `plan`; this module only records what they chose.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Index, IndexMut};

/// How many capacity dimensions a cell has.
pub const DIMS: usize = 5;

/// One capacity dimension of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Connections the cell's nodes hold to shared dependencies (the
    /// metadata database, the API behind a proxy): the sum of the nodes'
    /// pools, as `wharf check` computes it. Unit: connections.
    Connections,
    /// Stored bytes. Unit: bytes.
    Storage,
    /// Pull requests. Unit: milli-requests per second.
    PullRate,
    /// Push requests. Unit: milli-requests per second.
    PushRate,
    /// Bytes served and received. Unit: bytes per second.
    Bandwidth,
}

impl Dimension {
    /// Every dimension, in index order.
    pub const ALL: [Dimension; DIMS] = [
        Dimension::Connections,
        Dimension::Storage,
        Dimension::PullRate,
        Dimension::PushRate,
        Dimension::Bandwidth,
    ];

    /// Position in a [`Load`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Name for people.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Connections => "connections",
            Dimension::Storage => "storage",
            Dimension::PullRate => "pull rate",
            Dimension::PushRate => "push rate",
            Dimension::Bandwidth => "bandwidth",
        }
    }

    /// Value of the `dimension` label in alert records.
    pub fn label(self) -> &'static str {
        match self {
            Dimension::Connections => "connections",
            Dimension::Storage => "storage_bytes",
            Dimension::PullRate => "pull_requests_per_second",
            Dimension::PushRate => "push_requests_per_second",
            Dimension::Bandwidth => "bandwidth_bytes_per_second",
        }
    }

    /// An amount of this dimension, with its unit, for people.
    pub fn format(self, amount: f64) -> String {
        match self {
            Dimension::Connections => format!("{amount:.0} connections"),
            Dimension::Storage => format_bytes(amount),
            Dimension::PullRate | Dimension::PushRate => format!("{:.1} req/s", amount / 1000.0),
            Dimension::Bandwidth => format!("{}/s", format_bytes(amount)),
        }
    }
}

fn format_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An amount on every dimension. Integers, so that a cell's use is exact
/// whatever order placeables arrive and leave in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Load(pub [u64; DIMS]);

impl Load {
    /// Nothing on every dimension.
    pub const ZERO: Load = Load([0; DIMS]);

    /// `self + other`, saturating.
    pub fn plus(&self, other: &Load) -> Load {
        let mut out = *self;
        for i in 0..DIMS {
            out.0[i] = out.0[i].saturating_add(other.0[i]);
        }
        out
    }

    /// `self - other`, saturating at zero.
    pub fn minus(&self, other: &Load) -> Load {
        let mut out = *self;
        for i in 0..DIMS {
            out.0[i] = out.0[i].saturating_sub(other.0[i]);
        }
        out
    }

    /// Each dimension multiplied by `f` and rounded up.
    pub fn scaled(&self, f: f64) -> Load {
        let mut out = *self;
        for i in 0..DIMS {
            out.0[i] = (self.0[i] as f64 * f).ceil() as u64;
        }
        out
    }
}

impl Index<Dimension> for Load {
    type Output = u64;
    fn index(&self, d: Dimension) -> &u64 {
        &self.0[d.index()]
    }
}

impl IndexMut<Dimension> for Load {
    fn index_mut(&mut self, d: Dimension) -> &mut u64 {
        &mut self.0[d.index()]
    }
}

/// `used / capacity`; a zero capacity is full as soon as anything uses it.
pub fn utilisation(used: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        if used == 0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        used as f64 / capacity as f64
    }
}

/// A cell's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellId(pub u32);

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A zone: a failure domain holding one or more cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneId(pub u16);

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "z{}", self.0)
    }
}

/// A placeable's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlaceableId(pub u32);

impl fmt::Display for PlaceableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// What the fleet knows about a cell's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellState {
    /// Serving and accepting placeables.
    Active,
    /// Being emptied: placeables may leave, none may arrive.
    Draining,
    /// Its use could not be read, so nothing may be placed on it.
    Unknown,
    /// Removed from the fleet; kept so ids stay stable.
    Retired,
}

/// One cell: N Wharf nodes, a database, a bucket, a load balancer.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Stable id; ties between equal scores go to the lower id.
    pub id: CellId,
    /// Failure domain.
    pub zone: ZoneId,
    /// What the cell can carry on each dimension (100%).
    pub capacity: Load,
    /// Use not caused by any placeable (the cell's own overhead).
    pub base: Load,
    /// Health as last reported.
    pub state: CellState,
    /// When its use was last read (seconds on the fleet's clock).
    pub last_seen: u64,
    /// How old a reading may be before the cell counts as stale.
    pub staleness_bound: u64,
}

impl Cell {
    /// An active cell in `zone` with `capacity`, seen at time 0, with a
    /// staleness bound of one day.
    pub fn new(id: u32, zone: u16, capacity: Load) -> Cell {
        Cell {
            id: CellId(id),
            zone: ZoneId(zone),
            capacity,
            base: Load::ZERO,
            state: CellState::Active,
            last_seen: 0,
            staleness_bound: 86_400,
        }
    }

    /// Whether its last reading is older than its staleness bound at `now`.
    pub fn is_stale(&self, now: u64) -> bool {
        now.saturating_sub(self.last_seen) > self.staleness_bound
    }
}

/// What a placeable is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A customer's registry.
    Tenant,
    /// A component of the fleet's own control plane.
    ControlPlane,
}

/// How far apart the members of an anti-affinity group must stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Never two members on one cell.
    Cell,
    /// Never two members in one zone.
    Zone,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Cell => "cell",
            Scope::Zone => "zone",
        })
    }
}

/// Membership of an anti-affinity group. Two members conflict on one cell
/// always, and in one zone when either of them declared [`Scope::Zone`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AntiAffinity {
    /// Group name, shared by the members.
    pub group: String,
    /// How far apart.
    pub scope: Scope,
}

/// Something that lives in exactly one cell at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Placeable {
    /// Stable id.
    pub id: PlaceableId,
    /// Tenant or control-plane component.
    pub kind: Kind,
    /// What it uses on each dimension (its reservation).
    pub demand: Load,
    /// Expected growth of its demand, as a fraction per day.
    pub growth_per_day: f64,
    /// Groups whose other members must stay apart from it.
    pub anti_affinity: Vec<AntiAffinity>,
    /// If not empty, the only cells it may live in.
    pub pinned_to: Vec<CellId>,
    /// Cells it must never live in.
    pub excluded: Vec<CellId>,
}

impl Placeable {
    /// A tenant with `demand`, no growth and no rules.
    pub fn tenant(id: u32, demand: Load) -> Placeable {
        Placeable {
            id: PlaceableId(id),
            kind: Kind::Tenant,
            demand,
            growth_per_day: 0.0,
            anti_affinity: Vec::new(),
            pinned_to: Vec::new(),
            excluded: Vec::new(),
        }
    }
}

/// Where a placeable is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Nowhere (new, refused, or its cell was retired).
    Unplaced,
    /// On the cell at this index.
    At(usize),
    /// Being moved between the cells at these indexes; it occupies both.
    Moving {
        /// Index of the cell it leaves.
        from: usize,
        /// Index of the cell it goes to.
        to: usize,
    },
    /// Left the fleet.
    Gone,
}

/// The rules and limits decisions apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Safe threshold per dimension: no placement or move may take a cell
    /// above it (default 0.7). Also the critical alert level.
    pub threshold: [f64; DIMS],
    /// Warning level per dimension (default 0.6).
    pub warn: [f64; DIMS],
    /// At most this many moves in or out of one cell per plan step.
    pub max_moves_per_cell: usize,
    /// Placement filters reserve this many days of a placeable's growth.
    pub growth_horizon_days: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            threshold: [0.7; DIMS],
            warn: [0.6; DIMS],
            max_moves_per_cell: 2,
            growth_horizon_days: 0.0,
        }
    }
}

impl Policy {
    /// Whether `used` on dimension `d` of a cell with `capacity` is within
    /// the threshold. The one comparison every filter and check uses.
    pub fn within(&self, d: Dimension, used: u64, capacity: u64) -> bool {
        utilisation(used, capacity) <= self.threshold[d.index()]
    }

    /// The demand a filter reserves for `p`: its demand plus its growth over
    /// the horizon.
    pub fn reserved(&self, p: &Placeable) -> Load {
        if self.growth_horizon_days <= 0.0 || p.growth_per_day <= 0.0 {
            p.demand
        } else {
            p.demand
                .scaled(1.0 + p.growth_per_day * self.growth_horizon_days)
        }
    }
}

/// The fleet: cells, placeables and where each one is.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    cells: Vec<Cell>,
    placeables: Vec<Placeable>,
    location: Vec<Location>,
    used: Vec<Load>,
    members: Vec<Vec<usize>>,
    groups: HashMap<String, Vec<usize>>,
    cell_index: HashMap<CellId, usize>,
    placeable_index: HashMap<PlaceableId, usize>,
}

impl Fleet {
    /// A fleet of `cells` with no placeables.
    pub fn new(cells: Vec<Cell>) -> Fleet {
        let mut f = Fleet::default();
        for c in cells {
            f.add_cell(c);
        }
        f
    }

    /// Adds a cell; returns its index. Panics on a duplicate id.
    pub fn add_cell(&mut self, cell: Cell) -> usize {
        let idx = self.cells.len();
        assert!(
            self.cell_index.insert(cell.id, idx).is_none(),
            "duplicate cell id {}",
            cell.id
        );
        self.used.push(cell.base);
        self.members.push(Vec::new());
        self.cells.push(cell);
        idx
    }

    /// Adds an unplaced placeable; returns its index. Panics on a duplicate id.
    pub fn add_placeable(&mut self, p: Placeable) -> usize {
        let idx = self.placeables.len();
        assert!(
            self.placeable_index.insert(p.id, idx).is_none(),
            "duplicate placeable id {}",
            p.id
        );
        for aa in &p.anti_affinity {
            self.groups.entry(aa.group.clone()).or_default().push(idx);
        }
        self.placeables.push(p);
        self.location.push(Location::Unplaced);
        idx
    }

    /// The cells, by index.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// Mutable access to a cell's state, readings and capacity. Change its
    /// base use with [`Fleet::set_base`] instead: use is derived from it.
    pub fn cell_mut(&mut self, ci: usize) -> &mut Cell {
        &mut self.cells[ci]
    }

    /// Changes a cell's capacity.
    pub fn set_capacity(&mut self, ci: usize, capacity: Load) {
        self.cells[ci].capacity = capacity;
    }

    /// The placeables, by index (including gone ones).
    pub fn placeables(&self) -> &[Placeable] {
        &self.placeables
    }

    /// Where each placeable is, by index.
    pub fn locations(&self) -> &[Location] {
        &self.location
    }

    /// Where placeable `pi` is.
    pub fn location(&self, pi: usize) -> Location {
        self.location[pi]
    }

    /// Index of the cell with `id`.
    pub fn cell_idx(&self, id: CellId) -> Option<usize> {
        self.cell_index.get(&id).copied()
    }

    /// Index of the placeable with `id`.
    pub fn placeable_idx(&self, id: PlaceableId) -> Option<usize> {
        self.placeable_index.get(&id).copied()
    }

    /// A cell's use on every dimension, counting moving placeables on both
    /// of their cells.
    pub fn used(&self, ci: usize) -> Load {
        self.used[ci]
    }

    /// Indexes of the placeables occupying a cell (moving ones included).
    pub fn members(&self, ci: usize) -> &[usize] {
        &self.members[ci]
    }

    /// Indexes of the members of an anti-affinity group.
    pub fn group(&self, name: &str) -> &[usize] {
        self.groups.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Utilisation of one dimension of a cell.
    pub fn utilisation(&self, ci: usize, d: Dimension) -> f64 {
        utilisation(self.used[ci][d], self.cells[ci].capacity[d])
    }

    /// The highest utilisation over a cell's dimensions, and which one.
    pub fn max_utilisation(&self, ci: usize) -> (f64, Dimension) {
        let mut best = (f64::NEG_INFINITY, Dimension::Connections);
        for d in Dimension::ALL {
            let u = self.utilisation(ci, d);
            if u > best.0 {
                best = (u, d);
            }
        }
        best
    }

    /// Whether every dimension of a cell is within the policy's threshold.
    pub fn within_threshold(&self, ci: usize, policy: &Policy) -> bool {
        Dimension::ALL
            .iter()
            .all(|&d| policy.within(d, self.used[ci][d], self.cells[ci].capacity[d]))
    }

    /// The cells a placeable occupies now (none, one, or two while moving).
    pub fn occupied(&self, pi: usize) -> ([usize; 2], usize) {
        match self.location[pi] {
            Location::At(c) => ([c, c], 1),
            Location::Moving { from, to } => ([from, to], 2),
            Location::Unplaced | Location::Gone => ([0, 0], 0),
        }
    }

    fn occupy(&mut self, pi: usize, ci: usize) {
        let d = self.placeables[pi].demand;
        self.used[ci] = self.used[ci].plus(&d);
        self.members[ci].push(pi);
    }

    fn vacate(&mut self, pi: usize, ci: usize) {
        let d = self.placeables[pi].demand;
        self.used[ci] = self.used[ci].minus(&d);
        let m = &mut self.members[ci];
        if let Some(pos) = m.iter().position(|&x| x == pi) {
            m.swap_remove(pos);
        }
    }

    /// Puts an unplaced placeable on a cell. No rule is checked here: the
    /// caller decided with `place`.
    pub fn assign(&mut self, pi: usize, ci: usize) {
        assert_eq!(
            self.location[pi],
            Location::Unplaced,
            "assign: not unplaced"
        );
        self.occupy(pi, ci);
        self.location[pi] = Location::At(ci);
    }

    /// Takes a placeable off its cell(s), leaving it unplaced.
    pub fn unassign(&mut self, pi: usize) {
        let (cells, n) = self.occupied(pi);
        for &c in &cells[..n] {
            self.vacate(pi, c);
        }
        if self.location[pi] != Location::Gone {
            self.location[pi] = Location::Unplaced;
        }
    }

    /// Starts moving a placed placeable to another cell: from now on it
    /// occupies both.
    pub fn begin_move(&mut self, pi: usize, to: usize) {
        let Location::At(from) = self.location[pi] else {
            panic!("begin_move: placeable is not at rest on a cell");
        };
        assert_ne!(from, to, "begin_move: same cell");
        self.occupy(pi, to);
        self.location[pi] = Location::Moving { from, to };
    }

    /// Finishes a move: the placeable leaves its old cell.
    pub fn finish_move(&mut self, pi: usize) {
        let Location::Moving { from, to } = self.location[pi] else {
            panic!("finish_move: placeable is not moving");
        };
        self.vacate(pi, from);
        self.location[pi] = Location::At(to);
    }

    /// Abandons a move: the placeable leaves the destination and stays at
    /// its source.
    pub fn cancel_move(&mut self, pi: usize) {
        let Location::Moving { from, to } = self.location[pi] else {
            panic!("cancel_move: placeable is not moving");
        };
        self.vacate(pi, to);
        self.location[pi] = Location::At(from);
    }

    /// Removes a placeable from the fleet for good.
    pub fn remove_placeable(&mut self, pi: usize) {
        self.unassign(pi);
        self.location[pi] = Location::Gone;
        for aa in self.placeables[pi].anti_affinity.clone() {
            if let Some(g) = self.groups.get_mut(&aa.group) {
                g.retain(|&x| x != pi);
            }
        }
    }

    /// Changes a placeable's demand, keeping its cells' use exact.
    pub fn set_demand(&mut self, pi: usize, demand: Load) {
        let old = self.placeables[pi].demand;
        let (cells, n) = self.occupied(pi);
        for &c in &cells[..n] {
            self.used[c] = self.used[c].minus(&old).plus(&demand);
        }
        self.placeables[pi].demand = demand;
    }

    /// Changes a cell's base use.
    pub fn set_base(&mut self, ci: usize, base: Load) {
        let old = self.cells[ci].base;
        self.used[ci] = self.used[ci].minus(&old).plus(&base);
        self.cells[ci].base = base;
    }

    /// Replaces a placeable's pins.
    pub fn set_pins(&mut self, pi: usize, pins: Vec<CellId>) {
        self.placeables[pi].pinned_to = pins;
    }

    /// The first member of a group that conflicts with placeable `pi`
    /// occupying cell `ci`, with the group's name and the scope that applies.
    pub fn anti_affinity_conflict(&self, pi: usize, ci: usize) -> Option<(&str, Scope, usize)> {
        let p = &self.placeables[pi];
        let zone = self.cells[ci].zone;
        for aa in &p.anti_affinity {
            for &other in self.group(&aa.group) {
                if other == pi {
                    continue;
                }
                let (cells, n) = self.occupied(other);
                for &oc in &cells[..n] {
                    if oc == ci {
                        return Some((&aa.group, Scope::Cell, other));
                    }
                    if self.cells[oc].zone == zone
                        && (aa.scope == Scope::Zone
                            || self.placeables[other]
                                .anti_affinity
                                .iter()
                                .any(|o| o.group == aa.group && o.scope == Scope::Zone))
                    {
                        return Some((&aa.group, Scope::Zone, other));
                    }
                }
            }
        }
        None
    }
}
