"""AVA frame-mAP@0.5IoU with the same numbers as the official ActivityNet evaluator, vectorised with numpy.

Modules: csv_rows (parsing the CSV files into rows, screening bad boxes), keep (the official reader's keep and
order rules), readers (label map, ground truth, detections, exclusions), metric (frame-mAP), output (writing
detections and results).

Mirrors activitynet/ActivityNet `Evaluation/get_ava_performance.py` (HEAD) and the PASCAL code under
`Evaluation/ava/` step by step:

- CSV rows are `video_id,timestamp,x1,y1,x2,y2,action_id[,score]` or `video_id,timestamp` (a keyframe with no
  boxes). A keyframe's key is `"%s,%.6f" % (video_id, Decimal(timestamp))`, so `0902` and `902.0` are one key.
  Rows of classes outside the label map are dropped (their keys still count as evaluated keyframes).
- Per keyframe the reader keeps what the official min-heap of `(score, action_id, y1, x1, y2, x2)` keeps (at most
  50 detections, a newcomer replaces the minimum only with a strictly higher score), sorted by descending score
  stably over heap order. Where ties make that order observable, the heap is replayed exactly.
- Only keyframes named in the ground truth are scored; detections on one without boxes are false positives.
  Optional exclusions (a `video_id,timestamp` list, as in older versions) drop keyframes from both sides.
  Invalid detection boxes (y1 >= y2 or x1 >= x2) are dropped after the cap.
- Per keyframe and class, detections in that order take their highest-IoU box (first on ties): a true positive
  if IoU >= 0.5 and the box is still free, otherwise a false positive (no second choice).
- Per class, VOC all-point AP over the detections in `np.argsort(scores)[::-1]` order (the same call, so tied
  scores come out the same); the mAP is the NaN-mean over class slots 1..max(id), i.e. over classes with ground
  truth (AP 0 without detections).

Bad boxes never stop an evaluation; each kind is logged as one warning per file with the count and the first
`file:line` locations (BadRowReport). Ground-truth boxes with x2 < x1 or y2 < y1, a NaN or a coordinate outside
[0, 1] are dropped: the result is the official one on the file without those rows (their keyframe stays evaluated,
as for a row of a class outside the label map). Everything else keeps the official semantics, so the result
equals the official one: empty ground-truth boxes (x2 == x1 or y2 == y1) count as instances no detection can
match; detection boxes with x2 <= x1 or y2 <= y1 are dropped after the cap (they still take cap slots) and ones
outside [0, 1] are scored as they are.

Reading is the expensive part (pandas is not a dependency): well-formed chunks go through numpy's C `loadtxt`;
anything else (2-column rows, quotes, bad values) is re-read with the `csv` module, which also names the file and
line of an error.
"""
