-- Cost per page: total FLOPs and bytes divided by the pages in the batch, next to the token counts.
SELECT report_id, variant, mode, batch, image_placeholder_tokens, prefill_tokens, new_tokens,
       CAST(total_flops AS DOUBLE PRECISION) / batch AS flops_per_page,
       CAST(total_bytes AS DOUBLE PRECISION) / batch AS bytes_per_page
FROM v_reports
ORDER BY flops_per_page DESC
