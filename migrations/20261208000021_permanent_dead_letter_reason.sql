-- A handler's permanent error is dead-lettered with reason `permanent` (it was `discarded`,
-- which read as the operator's Discard button: cancelling a dead letter). Dead letters
-- recorded before keep their meaning under the new name.
update docket.jobs set dead_letter_reason = 'permanent'
where state = 'dead_letter' and dead_letter_reason = 'discarded';
